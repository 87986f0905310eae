"""Stage 4, report: what the run did and measured, as report.json / report.md / a PNG."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from attacker.collect import CollectStats
from attacker.config import AttackConfig
from attacker.eval.fidelity import Fidelity
from attacker.eval.report import write_report
from attacker.stages.collect import LabelledEvalSet
from attacker.train.loop import TrainResult
from shared.schemas import ModelInfo
from shared.urls import redact_url

__all__ = ["build_report", "detection_summary", "point_entry", "write_run_report"]


def point_entry(queries: int, fidelity: Fidelity, trained: TrainResult) -> dict[str, Any]:
    """One budget point: fidelity, training time and steps, and the last epoch's loss parts."""
    last = trained.history[-1] if trained.history else {}
    return {
        "queries": queries,
        **fidelity.to_dict(),
        "train_seconds": round(trained.seconds, 1),
        "steps": trained.steps,
        "epochs": trained.epochs,
        "resumed_from_epoch": trained.resumed_from_epoch,
        "loss_parts": {k: round(v, 5) for k, v in last.items() if k not in ("epoch", "steps")},
        **({} if trained.pretext is None else {"pretext": trained.pretext}),
    }


def detection_summary(collect: CollectStats) -> str | None:
    """What the attacker saw of the victim's detection, and what its stealth mode did."""
    parts = []
    if collect.stopped_by == "blocked":
        parts.append(
            f"blocked by the victim after {collect.extra.get('blocked_after_paid')} paid queries"
        )
    elif collect.stopped_by == "throttled":
        parts.append(f"throttled by the victim after {collect.paid} paid queries")
    elif collect.stopped_by == "victim-unavailable":
        parts.append(
            f"the victim stayed unavailable past the retry window after {collect.paid} paid queries"
        )
    stealth = collect.extra.get("stealth")
    if stealth:
        min_w = stealth["local_min_w"]
        parts.append(
            f"stealth: {stealth['natural']} natural + {stealth['attack']} attack clips "
            f"(final natural share {stealth['natural_fraction']}), local PRADA W min "
            f"{'n/a' if min_w is None else round(min_w, 3)}; queries before any alarm: "
            f"{stealth['queries_before_alarm'] or 'all (never blocked)'}"
        )
    return "; ".join(parts) or None


def build_report(
    config: AttackConfig,
    *,
    info: ModelInfo,
    collect: CollectStats,
    eval_set: LabelledEvalSet,
    loss: str,
    points: list[dict[str, Any]],
    export_dir: Path,
    provenance: dict[str, Any],
    wall_seconds: float,
) -> dict[str, Any]:
    return {
        "name": config.name,
        "victim": {
            "url": redact_url(config.victim.url),
            "model": info.model,
            "output": info.output.value,
            "top_k": info.top_k,
            "num_classes": info.num_classes,
            "labels": list(info.labels),
        },
        "budget": config.budget,
        "source": "datafree" if config.query.datafree else config.query.source.kind,
        "loss": loss,
        "train": {"plan": config.train.plan, "epochs": config.train.epochs},
        "student": {"architecture": config.student.architecture, "export": str(export_dir)},
        "collect": asdict(collect),
        "detection": detection_summary(collect),
        "eval": {
            "clips": len(eval_set.clips),
            "paid": eval_set.clips.paid,
            "source": (config.eval.source or config.query.source).kind,
            "victim_output": eval_set.info.output.value,
            "victim_accuracy": points[-1]["victim_accuracy"],
        },
        "points": points,
        "final": points[-1],
        "git_commit": provenance["git_commit"],
        "provenance": provenance,
        "wall_seconds": round(wall_seconds, 1),
    }


def write_run_report(run_dir: Path, report: dict[str, Any]) -> dict[str, Any]:
    """Write the report files; returns the report with their ``paths``."""
    paths = write_report(run_dir, report)
    return {**report, "paths": {k: str(v) for k, v in paths.items()}}
