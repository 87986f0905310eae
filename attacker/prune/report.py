"""prune.json (the data), prune.md (for people) and prune.png (sparsity vs top-1 agreement)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = [
    "PRUNE_JSON",
    "PRUNE_MD",
    "PRUNE_PNG",
    "rounds_table",
    "run_report_section",
    "summarise_rows",
    "write_prune_report",
]

PRUNE_JSON = "prune.json"
PRUNE_MD = "prune.md"
PRUNE_PNG = "prune.png"
SECTION_ROW_KEYS = (
    "round",
    "sparsity",
    "remaining_weights",
    "top1_agreement",
    "top5_agreement",
    "accuracy",
)


def summarise_rows(rows: list[dict[str, Any]], *, tolerance: float = 0.02) -> dict[str, Any]:
    """The run's (dense) student, the dense round 0, the last round, and the sparsest round
    whose top-1 agreement is within ``tolerance`` of the run's student."""
    dense = rows[0]
    rounds = [r for r in rows if r["round"] is not None]
    last = rounds[-1]
    kept = [r for r in rounds if r["top1_agreement"] >= dense["top1_agreement"] - tolerance]
    sparsest = max(kept, key=lambda r: r["sparsity"]) if kept else None
    return {
        "dense_top1": dense["top1_agreement"],
        "round0_top1": rounds[0]["top1_agreement"],
        "final_round": last["round"],
        "final_sparsity": last["sparsity"],
        "final_top1": last["top1_agreement"],
        "final_minus_dense": round(last["top1_agreement"] - dense["top1_agreement"], 4),
        "final_minus_round0": round(last["top1_agreement"] - rounds[0]["top1_agreement"], 4),
        "tolerance": tolerance,
        "sparsest_within_tolerance": None
        if sparsest is None
        else {"round": sparsest["round"], "sparsity": sparsest["sparsity"]},
    }


def run_report_section(report: dict[str, Any], markdown: Path) -> dict[str, Any]:
    """The pruning table for the run's own report (``report.json`` key ``prune``)."""
    return {
        "settings": {k: report["settings"][k] for k in ("rounds", "rewind", "start", "epochs")},
        "round_rate": report["round_rate"],
        "rows": [{k: row.get(k) for k in SECTION_ROW_KEYS} for row in report["rounds"]],
        "summary": report["summary"],
        "git_commit": report["git_commit"],
        "report": str(markdown),
    }


def write_prune_report(out_dir: Path, report: dict[str, Any]) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / PRUNE_JSON,
        "markdown": out_dir / PRUNE_MD,
        "plot": out_dir / PRUNE_PNG,
    }
    paths["json"].write_text(json.dumps(report, indent=2) + "\n")
    paths["markdown"].write_text(_markdown(report))
    _plot(report, paths["plot"])
    return paths


REWIND_TEXT = {
    "weights": "weight rewinding to the weights after {step} steps of round 0",
    "lr": "learning-rate rewinding (trained weights kept, the schedule restarted every round)",
    "finetune": "fine-tuning (trained weights kept, a small constant learning rate)",
}


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def rounds_table(rows: list[dict[str, Any]]) -> list[str]:
    """The Markdown table of the rounds (prune.md's and the run report's)."""
    lines = [
        "| round | sparsity | remaining weights | top-1 agreement | top-5 agreement | accuracy |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        name = "run's student" if row["round"] is None else str(row["round"])
        lines.append(
            f"| {name} | {_pct(row['sparsity'])} | {row['remaining_weights']:,} | "
            f"{_pct(row['top1_agreement'])} | {_pct(row['top5_agreement'])} | "
            f"{_pct(row.get('accuracy'))} |"
        )
    return lines


def _markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    summary = report["summary"]
    lines = [
        f"# Iterative magnitude pruning of `{report['run_dir']}`",
        "",
        f"- Student: `{report['student']}`; start weights: **{s['start']}**; "
        + REWIND_TEXT[s.get("rewind", "weights")].format(step=report["rewind_taken_at"]),
        f"- {s['rounds']} round{'' if s['rounds'] == 1 else 's'} pruning "
        f"{report.get('round_rate', s['rate']):.1%} of the "
        f"surviving conv/linear weights each (global magnitude), "
        + ("the run's recipe" if s["epochs"] is None else f"{s['epochs']} epochs")
        + f" per round ({report['train']['steps']} steps, lr {report['train']['lr']}, "
        f"{report['train']['schedule']} schedule)",
        f"- Transfer set: {report['transfer']['clips']} clips ({report['transfer']['labelled']} "
        f"with true labels, weight {report['transfer']['true_label_weight']}); loss "
        f"`{report['loss']}`",
        f"- Evaluation: {report['eval']['clips']} held-out clips (`eval_set.npz`)",
        "",
        *rounds_table(report["rounds"]),
    ]
    within = summary["sparsest_within_tolerance"]
    lines += [
        "",
        f"Last round: {_pct(summary['final_sparsity'])} sparse, top-1 agreement "
        f"{_pct(summary['final_top1'])} ({100 * summary['final_minus_dense']:+.1f} points against "
        f"the run's student, {100 * summary['final_minus_round0']:+.1f} against round 0). "
        + (
            f"Sparsest round within {100 * summary['tolerance']:.0f} points of the run's student: "
            f"round {within['round']} ({_pct(within['sparsity'])})."
            if within
            else f"No round stayed within {100 * summary['tolerance']:.0f} points of the run's "
            "student."
        ),
        "",
        f"![sparsity vs top-1 agreement]({PRUNE_PNG})",
        "",
        f"Pruned student exported to `{report['export']}` (zeros stored in place); ticket "
        f"(masks, and the rewind weights under weight rewinding) in `{report['ticket']}`.",
        f"Git commit: `{report['git_commit']}`; wall time {report['wall_seconds']:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rounds"]
    dense = rows[0]
    rounds = [r for r in rows if r["round"] is not None]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    xs = [100 * r["sparsity"] for r in rounds]
    ax.plot(xs, [r["top1_agreement"] for r in rounds], "o-", label="top-1 agreement")
    ax.plot(xs, [r["top5_agreement"] for r in rounds], "s--", alpha=0.6, label="top-5 agreement")
    ax.axhline(dense["top1_agreement"], color="grey", ls=":", label="run's student (top-1)")
    ax.axhspan(
        dense["top1_agreement"] - report["summary"]["tolerance"],
        dense["top1_agreement"],
        color="grey",
        alpha=0.12,
    )
    ax.set_xlabel("sparsity of conv/linear weights (%)")
    ax.set_ylabel("agreement with the victim (held-out clips)")
    ax.set_xlim(-2, 100)
    ax.grid(alpha=0.3)
    settings = report["settings"]
    ax.set_title(
        f"Iterative magnitude pruning, start: {settings['start']}, "
        f"rewind: {settings.get('rewind', 'weights')}",
        fontsize=9,
    )
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
