"""``attacker prune RUN_DIR``: iterative magnitude pruning of a run's student on its transfer
set, measured on its held-out clips; writes RUN_DIR/prune/ (report, plot, pruned student,
ticket) and adds the pruning table to the run's report (report.json / report.md)."""

from __future__ import annotations

import copy
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from attacker.eval.report import add_report_section
from attacker.provenance import git_commit
from attacker.prune.inputs import RunInputs, load_run_inputs
from attacker.prune.lottery import PruneOutcome, PruneSettings, run_lottery
from attacker.prune.report import run_report_section, summarise_rows, write_prune_report
from attacker.stages.train import build_student
from attacker.students import StudentModel, export_student
from attacker.train.process import prepare_training_process
from shared.schemas import OutputMode

__all__ = ["PRUNE_DIR", "TICKET_FILE", "prune_run"]

PRUNE_DIR = "prune"
TICKET_FILE = "ticket.safetensors"


def _start_model(inputs: RunInputs, settings: PruneSettings) -> StudentModel:
    if settings.start == "student":
        return copy.deepcopy(inputs.student)
    manifest = inputs.transfer.manifest
    return build_student(inputs.config, labels=manifest.labels, clip_shape=manifest.clip_shape)


def save_ticket(outcome: PruneOutcome, path: Path) -> Path:
    """The winning ticket: the rewind weights with the last masks applied (``weights.*``), and
    the masks (``mask.*``, uint8), so the sparse network can be retrained from its rewind point.
    Learning-rate rewinding and fine-tuning have no rewind point: their ticket is the masks."""
    tensors = {}
    for key, value in outcome.rewind_state.items():
        module = key.removesuffix(".weight")
        if key.endswith(".weight") and module in outcome.masks:
            value = value * outcome.masks[module].to(value.dtype)
        tensors[f"weights.{key}"] = value.contiguous()
    for module, mask in outcome.masks.items():
        tensors[f"mask.{module}"] = mask.to(torch.uint8).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata: dict[str, str] = {"rewind": outcome.settings.rewind}
    if outcome.settings.rewind == "weights":
        metadata["rewind_step"] = str(outcome.rewind_taken_at)
    save_file(tensors, str(path), metadata=metadata)
    return path


def prune_run(
    run_dir: Path,
    settings: PruneSettings,
    *,
    threads: int = 0,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Prune the run's student; write RUN_DIR/prune/; return the report (prune.json's data)."""
    began = time.perf_counter()
    inputs = load_run_inputs(run_dir)
    config = inputs.config
    threads = threads or config.train.threads
    prepare_training_process(threads)
    outcome = run_lottery(
        config,
        inputs.transfer,
        inputs.eval_set,
        trained=inputs.student,
        start=_start_model(inputs, settings),
        settings=settings,
        show_progress=show_progress,
    )
    assert outcome.model is not None
    out = run_dir / PRUNE_DIR
    export = export_student(outcome.model, out / "student").parent
    ticket = save_ticket(outcome, out / TICKET_FILE)
    rows = [row.to_dict() for row in outcome.rows]
    mode = OutputMode(inputs.transfer.manifest.output)
    report: dict[str, Any] = {
        "run_dir": str(run_dir),
        "student": config.student.architecture,
        "settings": asdict(settings),
        "round_rate": round(settings.round_rate, 6),
        "targets": [round(settings.target(i), 6) for i in range(settings.rounds + 1)],
        "train": {
            k: v for k, v in asdict(outcome.train).items() if k not in ("epochs", "precision")
        },
        "rewind_taken_at": outcome.rewind_taken_at if settings.rewind == "weights" else None,
        "pruned": "global magnitude over every Conv1d/2d/3d and Linear weight (head included);"
        " biases and norms kept",
        "loss": config.train.loss_spec(mode).name,
        "transfer": {
            "clips": len(inputs.transfer),
            "labelled": inputs.labelled_clips,
            "true_label_weight": config.train.true_label_weight,
            "output": mode.value,
        },
        "eval": {"clips": len(inputs.eval_set)},
        "rounds": rows,
        "summary": summarise_rows(rows),
        "export": str(export),
        "ticket": str(ticket),
        "git_commit": git_commit(Path(__file__).resolve().parent),
        "wall_seconds": round(time.perf_counter() - began, 1),
    }
    paths = write_prune_report(out, report)
    add_report_section(run_dir, "prune", run_report_section(report, paths["markdown"]))
    report["paths"] = {k: str(v) for k, v in paths.items()}
    return report
