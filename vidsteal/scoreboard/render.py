"""The scoreboard's files: scoreboard.json (everything), scoreboard.md (tables) and
scoreboard.png (heat maps: agreement per attack x defense, queries to the first alarm per
attack x detector, each cell annotated)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Matrix", "agreement_matrix", "alarm_matrix", "markdown", "plot", "write_outputs"]


@dataclass(frozen=True)
class Matrix:
    """A heat map's data: ``values[i][j]`` (None: no value, e.g. no alarm) and cell texts."""

    title: str
    rows: list[str]
    columns: list[str]
    values: list[list[float | None]]
    texts: list[list[str]]


def agreement_matrix(results: dict[str, Any]) -> Matrix:
    """Top-1 agreement of the clone with the undefended victim, per attack x defense."""
    attacks = results["attacks"]
    defenses = list(results["defenses"])
    costs = results["benign_columns"]["defenses"]
    values = [[attacks[a]["defenses"][d]["top1_agreement"] for d in defenses] for a in attacks]
    return Matrix(
        title=f"top-1 agreement at {results['config']['budget']:,} queries",
        rows=list(attacks),
        columns=[
            f"{d}\n(benign cost {costs[d]['accuracy_cost_points'] + 0.0:.1f} pts)" for d in defenses
        ],
        values=values,
        texts=[[_agreement(v) for v in row] for row in values],
    )


def alarm_matrix(results: dict[str, Any]) -> Matrix:
    """Queries to the first alarm (None: no alarm within the budget) and the agreement the
    thief had reached by then, per attack x detector."""
    attacks = results["attacks"]
    detectors = results["detectors"]
    false = results["benign_columns"]["detectors"]
    values: list[list[float | None]] = []
    texts: list[list[str]] = []
    for attack in attacks:
        cells = [attacks[attack]["detectors"][d] for d in detectors]
        values.append([c["first_alarm"] for c in cells])
        texts.append(
            [
                f"{'none' if c['first_alarm'] is None else c['first_alarm']}\n"
                f"({_agreement(c['agreement_at_alarm'])})"
                for c in cells
            ]
        )
    return Matrix(
        title="queries to first alarm (agreement at alarm)",
        rows=list(attacks),
        columns=[f"{d}\n(benign FA {_false_alarms(false[d])})" for d in detectors],
        values=values,
        texts=texts,
    )


def _agreement(value: float | None) -> str:
    return "error" if value is None else f"{value:.3f}"


def _false_alarms(column: dict[str, Any]) -> str:
    return f"{int(column['false_alarm_sessions'])}/{int(column['false_alarm_videos'])}"


def _md_table(matrix: Matrix, footer: str, footer_cells: list[str]) -> list[str]:
    columns = [c.split("\n")[0] for c in matrix.columns]
    lines = ["| attack | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for row, texts in zip(matrix.rows, matrix.texts, strict=True):
        lines.append(f"| {row} | " + " | ".join(t.replace("\n", " ") for t in texts) + " |")
    return [*lines, f"| *{footer}* | " + " | ".join(footer_cells) + " |"]


def markdown(results: dict[str, Any]) -> str:
    config = results["config"]
    attacks = results["attacks"]
    costs = results["benign_columns"]["defenses"]
    false = results["benign_columns"]["detectors"]
    sessions = results["benign"]["sessions"]["queries"]
    videos = results["benign"]["videos"]["queries"]
    lines = [
        "# VidSteal scoreboard",
        "",
        f"Commit {results['git_commit']}, {results['measured_at'][:19]} UTC, victim "
        f"{results['victim']}; budget {config['budget']:,} queries per run, seed "
        f"{config['seed']}; agreement = top-1 agreement of the clone with the undefended victim "
        f"on {results['eval']['clips']:,} held-out SynthActions clips (seed "
        f"{results['eval']['seed']}). {results.get('seconds', '?')} s wall.",
        "",
        "## Agreement per attack and defense",
        "",
        *_md_table(
            agreement_matrix(results),
            "benign top-1 cost (points)",
            [f"{costs[d]['accuracy_cost_points'] + 0.0:.2f}" for d in results["defenses"]],
        ),
        "",
        "## Queries to the first alarm (agreement at the alarm) per attack and detector",
        "",
        "No alarm within the budget: `none`, and the agreement is the full-budget one.",
        "",
        *_md_table(
            alarm_matrix(results),
            f"false alarm: {sessions:,} benign clips / {videos:,} mp4s",
            [
                f"{_yes(false[d]['false_alarm_sessions'])} / {_yes(false[d]['false_alarm_videos'])}"
                for d in results["detectors"]
            ],
        ),
        "",
        "## Paid queries per run",
        "",
        "| run | budget | paid | clips |",
        "|---|---:|---:|---:|",
    ]
    for attack, row in attacks.items():
        named = [(d, row["defenses"][d]) for d in results["defenses"]]
        named += [
            (
                f"to the {d} alarm (cached, {row['detectors'][d].get('alarm_stream', 'own')} "
                "stream)",
                row["detectors"][d]["alarm_run"],
            )
            for d in results["detectors"]
        ]
        for name, run in named:
            if run is not None:
                lines.append(
                    f"| {attack} / {name} | {run['budget']} | {run['paid']} | {run['clips']} |"
                )
    return "\n".join(lines) + "\n"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    agreement, alarms = agreement_matrix(results), alarm_matrix(results)
    budget = results["config"]["budget"]
    rows = len(agreement.rows)
    width = 4 + 1.3 * (len(agreement.columns) + len(alarms.columns))
    fig, axes = plt.subplots(
        1,
        2,
        figsize=(width, 1.6 + 0.55 * rows),
        dpi=120,
        gridspec_kw={"width_ratios": [len(agreement.columns), len(alarms.columns)]},
    )
    _heat(axes[0], agreement, cmap="RdYlGn_r", vmin=0.0, vmax=1.0, fill=None)
    # No alarm: drawn as the budget (the thief got everything: the defender's worst colour).
    _heat(
        axes[1], alarms, cmap="RdYlGn_r", norm=LogNorm(vmin=10, vmax=max(budget, 11)), fill=budget
    )
    axes[1].set_yticklabels([])
    fig.suptitle(f"VidSteal scoreboard, commit {results['git_commit'][:10]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _heat(ax: Any, matrix: Matrix, *, fill: float | None, **style: Any) -> None:
    grid = [
        [math.nan if v is None and fill is None else (fill if v is None else v) for v in row]
        for row in matrix.values
    ]
    ax.imshow(grid, aspect="auto", **style)
    ax.set_xticks(range(len(matrix.columns)), matrix.columns, fontsize=7, rotation=30, ha="right")
    ax.set_yticks(range(len(matrix.rows)), matrix.rows, fontsize=8)
    for i, row in enumerate(matrix.texts):
        for j, text in enumerate(row):
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=7,
                color="white",
                bbox={"facecolor": "black", "alpha": 0.35, "pad": 1, "lw": 0},
            )
    ax.set_title(matrix.title, fontsize=9)


def write_outputs(results: dict[str, Any], out: Path) -> dict[str, Path]:
    """scoreboard.json, .md and .png in ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {kind: out / f"scoreboard.{kind}" for kind in ("json", "md", "png")}
    paths["json"].write_text(json.dumps(results, indent=2) + "\n")
    paths["md"].write_text(markdown(results))
    plot(results, paths["png"])
    return paths
