"""The run's report: report.json (the data), report.md (for people), a PNG of fidelity vs
queries. ``attacker report RUN_DIR`` rebuilds the Markdown and the plot from report.json.

Commands run later on the run directory add their section with :func:`add_report_section`:
``attacker prune`` the pruning table (sparsity vs agreement, key ``prune``) and ``attacker
transfer`` the transfer table (eps, transfer rate, noise control, ratio, white box; key
``transfer``, one row per eps and perturbation model, later measurements replacing earlier ones
of the same setting). A new ``attacker run`` into the directory writes a report without them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_PNG = "fidelity_vs_queries.png"


def write_report(run_dir: Path, report: dict[str, Any]) -> dict[str, Path]:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n")
    return render_report(run_dir)


def render_report(run_dir: Path) -> dict[str, Path]:
    report = json.loads((run_dir / REPORT_JSON).read_text())
    (run_dir / REPORT_MD).write_text(_markdown(report))
    _plot(report, run_dir / REPORT_PNG)
    return {
        "json": run_dir / REPORT_JSON,
        "markdown": run_dir / REPORT_MD,
        "plot": run_dir / REPORT_PNG,
    }


def add_report_section(run_dir: Path, key: str, section: dict[str, Any]) -> dict[str, Path]:
    """Store ``section`` under ``key`` in the run's report.json and render the report again.
    A directory without report.json (not made by ``attacker run``) is left alone: ``{}``."""
    if key not in SECTIONS:
        raise ValueError(f"unknown report section {key!r}")
    path = run_dir / REPORT_JSON
    if not path.is_file():
        return {}
    report = json.loads(path.read_text())
    if key == "transfer" and isinstance(report.get(key), dict):
        section = _merge_transfer(report[key], section)
    report[key] = section
    path.write_text(json.dumps(report, indent=2) + "\n")
    return render_report(run_dir)


def _setting(row: dict[str, Any]) -> tuple[float, str]:
    return float(row["eps"]), str(row["perturbation"])


def _merge_transfer(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The new measurement, plus the old rows of settings it did not measure (each row keeps
    the white-box number it was measured with)."""
    measured = {_setting(r) for r in new["rows"]}
    kept = [r for r in old.get("rows", []) if _setting(r) not in measured]
    rows = sorted([*kept, *new["rows"]], key=lambda r: (r["perturbation"], r["eps"]))
    return {**new, "rows": rows}


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _prune_lines(section: dict[str, Any]) -> list[str]:
    from attacker.prune.report import rounds_table

    s = section["settings"]
    return [
        "",
        "## Pruning (`attacker prune`)",
        "",
        f"{s['rounds']} rounds of global magnitude pruning ({100 * section['round_rate']:.1f}% "
        f"of the surviving conv/linear weights per round), {s['rewind']} rewinding, start: "
        f"{s['start']}; agreement on this run's held-out clips. Details: `{section['report']}`.",
        "",
        *rounds_table(section["rows"]),
    ]


def _transfer_lines(section: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Transfer attack (`attacker transfer`)",
        "",
        f"PGD on this run's clone (top-1 agreement {_rate(section.get('clone_agreement'))}), "
        f"sent to the victim; {section['starting_clips']} starting clips. "
        f"{section['definition'][0].upper()}{section['definition'][1:]}. "
        f"Details: `{section['report']}`.",
        "",
        "| eps (/255) | perturbation | transfer to victim | random noise | ratio "
        "| clone white box | victim white box |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in section["rows"]:
        ratio = "n/a" if row["ratio"] is None else f"{row['ratio']:.1f}x"
        if row.get("control_floored"):
            ratio = f">= {ratio}"
        lines.append(
            f"| {row['eps']:g} | {row['perturbation']} | {_rate(row['transfer'])} | "
            f"{_rate(row['noise'])} | {ratio} | {_rate(row.get('clone_white_box'))} | "
            f"{_rate(row.get('victim_white_box'))} |"
        )
    return lines


SECTIONS = {"prune": _prune_lines, "transfer": _transfer_lines}


def _weakest_classes_lines(report: dict[str, Any], shown: int = 5) -> list[str]:
    """The victim's classes the final clone agrees on least (per-class top-1 agreement on the
    held-out clips the victim answers with that class)."""
    per_class = report["points"][-1].get("class_agreement") if report["points"] else None
    if not per_class:
        return []
    labels = report["victim"].get("labels") or []
    answered = sorted((value, c) for c, value in enumerate(per_class) if value is not None)[:shown]
    named = ", ".join(
        f"{labels[c] if c < len(labels) else c} {_pct(value)}" for value, c in answered
    )
    return [
        "",
        f"Classes the clone agrees on least (at {report['points'][-1]['queries']} "
        f"queries, on the held-out clips the victim puts in each): {named}.",
    ]


def _markdown(report: dict[str, Any]) -> str:
    victim = report["victim"]
    collect = report["collect"]
    lines = [
        f"# Extraction report: {report['name']}",
        "",
        f"- Victim: `{victim['model']}` at {victim['url']} (output: **{victim['output']}**"
        + (f", k={victim['top_k']}" if victim.get("top_k") else "")
        + ")",
        f"- Query source: `{report['source']}`; student: `{report['student']['architecture']}`;"
        f" loss: `{report['loss']}`",
        f"- Budget: {report['budget']} queries; transfer set: {collect['clips']} clips "
        f"({collect['paid']} paid in this run, {collect['cache_hits']} from the cache, "
        f"{collect['retries']} retries); stopped by: {collect['stopped_by']}",
        f"- Evaluation: {report['eval']['clips']} held-out clips (`{report['eval']['source']}`), "
        f"victim accuracy {_pct(report['eval'].get('victim_accuracy'))}",
    ]
    select = collect.get("extra", {}).get("select")
    if select:
        lines.append(
            f"- Query selection: **{select['strategy']}**, {len(select['rounds_run'])} rounds"
            + (
                ""
                if select["strategy"] == "bandit"
                else f", {select['pool_factor']} unpaid candidates scored per paid query"
            )
        )
    if report.get("detection"):
        lines.append(f"- Detection: {report['detection']}")
    lines += [
        "",
        "| queries | top-1 fidelity | top-5 fidelity | accuracy | train s |",
        "|---:|---:|---:|---:|---:|",
    ]
    for point in report["points"]:
        lines.append(
            f"| {point['queries']} | {_pct(point['top1_agreement'])} | "
            f"{_pct(point['top5_agreement'])} | {_pct(point.get('accuracy'))} | "
            f"{point.get('train_seconds', 0):.0f} |"
        )
    lines += _weakest_classes_lines(report)
    lines += [
        "",
        f"![fidelity vs queries]({REPORT_PNG})",
        "",
        f"Student exported to `{report['student']['export']}` (safetensors + student.json).",
        f"Git commit: `{report.get('git_commit', 'unknown')}`; wall time "
        f"{report.get('wall_seconds', 0):.0f} s.",
    ]
    for key, render in SECTIONS.items():
        if report.get(key):
            lines += render(report[key])
    return "\n".join([*lines, ""])


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = report["points"]
    queries = [p["queries"] for p in points]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot(queries, [p["top1_agreement"] for p in points], "o-", label="top-1 fidelity")
    ax.plot(queries, [p["top5_agreement"] for p in points], "s--", label="top-5 fidelity")
    if any(p.get("accuracy") is not None for p in points):
        ax.plot(queries, [p.get("accuracy") or 0 for p in points], "^:", label="accuracy")
    victim_acc = report["eval"].get("victim_accuracy")
    if victim_acc is not None:
        ax.axhline(victim_acc, color="grey", lw=0.8, ls="--", label="victim accuracy")
    ax.set_xlabel("queries spent")
    ax.set_ylabel("agreement / accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    victim = report["victim"]
    ax.set_title(
        f"{report['name']}: {report['source']} vs {victim['model']} ({victim['output']})",
        fontsize=9,
    )
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
