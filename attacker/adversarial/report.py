"""transfer.json + transfer.md of a transfer attack (``RUN_DIR/transfer_attack/``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TRANSFER_JSON = "transfer.json"
TRANSFER_MD = "transfer.md"


def _rate(entry: dict[str, Any]) -> str:
    rate = entry["rate"]
    shown = "n/a" if rate is None else f"{rate:.3f}"
    return f"{shown} ({entry['flipped']}/{entry['eligible']})"


def render_markdown(report: dict[str, Any]) -> str:
    start = report["starting_clips"]
    queries = report["queries"]
    clone = report.get("clone", {})
    lines = [
        f"# Transfer attack on {report['victim']['model']}",
        "",
        f"Clone: `{clone.get('architecture')}` from `{report['run_dir']}`, top-1 agreement "
        f"{clone.get('eval_set_agreement', 'n/a')} on the run's held-out clips; agrees with the "
        f"victim on {start['clone_agrees_with_victim']:.3f} of the starting clips.",
        f"Starting clips: {start['n']} SynthActions clips (seed {start['source']['seed']}), "
        f"victim correct on {start['victim_correct']}, clone on {start['clone_correct']}, "
        f"both on {start['victim_and_clone_correct']}.",
        "",
        f"Definition: {report['definition']}.",
        "",
        "| eps (/255) | perturbation | steps | step | clone, white box | transfer to victim "
        "| random sign noise | ratio | transfer where clone correct |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.1f}x"
        if r["control_floored"]:
            ratio = f">= {ratio} (noise flipped none)"
        lines.append(
            f"| {r['eps']:g} | {r['perturbation']} | {r['steps']} | {r['step_size']:.3g} | "
            f"{_rate(r['clone_white_box'])} | {_rate(r['transfer'])} | {_rate(r['noise'])} | "
            f"{ratio} | {_rate(r['transfer_where_clone_correct'])} |"
        )
    lines += [
        "",
        f"Queries: {queries['clips_asked']} clips asked, {queries['distinct']} distinct, "
        f"{queries['paid']} paid now, {queries['cache_hits']} from the answer cache "
        f"(key spent {report['budget']['spent_before']} -> {report['budget']['spent_after']}).",
        f"Commit {report['git_commit']}; {report['wall_seconds']} s.",
        "",
    ]
    return "\n".join(lines)


def run_report_section(report: dict[str, Any], markdown: Path) -> dict[str, Any]:
    """The transfer table for the run's own report (``report.json`` key ``transfer``)."""
    return {
        "clone_agreement": report.get("clone", {}).get("eval_set_agreement"),
        "starting_clips": report["starting_clips"]["n"],
        "definition": report["definition"],
        "rows": [
            {
                "eps": r["eps"],
                "perturbation": r["perturbation"],
                "steps": r["steps"],
                "transfer": r["transfer"]["rate"],
                "noise": r["noise"]["rate"],
                "ratio": r["ratio"],
                "control_floored": r["control_floored"],
                "clone_white_box": r["clone_white_box"]["rate"],
                "victim_white_box": r.get("victim_white_box"),
            }
            for r in report["results"]
        ],
        "git_commit": report["git_commit"],
        "report": str(markdown),
    }


def write_transfer_report(out: Path, report: dict[str, Any]) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / TRANSFER_JSON, "markdown": out / TRANSFER_MD}
    paths["json"].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    paths["markdown"].write_text(render_markdown(report), encoding="utf-8")
    return paths
