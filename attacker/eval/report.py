"""The run's report: report.json (the data), report.md (for people), a PNG of fidelity vs
queries. ``attacker report RUN_DIR`` rebuilds the Markdown and the plot from report.json."""

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


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


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
    lines += [
        "",
        f"![fidelity vs queries]({REPORT_PNG})",
        "",
        f"Student exported to `{report['student']['export']}` (safetensors + student.json).",
        f"Git commit: `{report.get('git_commit', 'unknown')}`; wall time "
        f"{report.get('wall_seconds', 0):.0f} s.",
        "",
    ]
    return "\n".join(lines)


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
