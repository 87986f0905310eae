"""Train a fresh student on a finished run's transfer set, data-parallel under torchrun.

    torchrun --nproc_per_node 2 -m attacker.train.ddp RUN_DIR [--epochs N] [--limit N] [--out DIR]
    python -m attacker.train.ddp RUN_DIR            # one process, no torchrun

Reads ``RUN_DIR/config.resolved.yaml`` (the student, loss and schedule of the run) and
``RUN_DIR/transfer``, trains with :func:`~attacker.train.loop.train_student` (DDP when launched
by torchrun), and on the main rank exports the student (default ``RUN_DIR/student-ddp``) and
prints one JSON line: epochs, steps, seconds, world_size, the final loss, and a checksum of every
rank's weights (``replicas_identical`` is true when DDP kept them equal). ``--audit`` adds the
record indices each rank trained on in the first epoch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from attacker.config import AttackConfig, validate_config
from attacker.data import TransferSet
from attacker.data.dataset import TransferDataset
from attacker.stages.train import (
    build_run_loss,
    build_student,
    pretrain_if_asked,
    train_settings,
    training_fingerprint,
)
from attacker.students import export_student
from attacker.train.distributed import DistributedContext, distributed_from_env, state_checksum
from attacker.train.loop import train_student
from attacker.train.process import prepare_training_process
from shared.schemas import OutputMode

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

REDACTED = "***"  # what attacker.provenance writes in place of a secret


def load_resolved_config(run_dir: Path) -> AttackConfig:
    """The run's ``config.resolved.yaml``, validated, with the redacted secrets emptied (they
    are not needed to retrain)."""
    raw = yaml.safe_load((run_dir / "config.resolved.yaml").read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ValueError(f"{run_dir}/config.resolved.yaml does not hold a mapping")
    victim = raw.get("victim")
    if isinstance(victim, dict):
        for name, value in victim.items():
            if value == REDACTED:
                victim[name] = ""
    return validate_config(raw, source=str(run_dir / "config.resolved.yaml"))


def train_from_run(
    run_dir: Path,
    *,
    distributed: DistributedContext | None,
    epochs: float | None = None,
    limit: int | None = None,
    out: Path | None = None,
    checkpoint: Path | None = None,
    show_progress: bool = True,
    audit: bool = False,
) -> dict[str, Any] | None:
    """Train and (main rank) export; the summary on the main rank, ``None`` on the others."""
    config = load_resolved_config(run_dir)
    prepare_training_process(config.train.threads)
    transfer = TransferSet(run_dir / "transfer")
    mode = OutputMode(transfer.manifest.output)
    loss_fn = build_run_loss(config, mode)
    rank, world_size = (0, 1) if distributed is None else (distributed.rank, distributed.world_size)
    count = len(transfer) if limit is None else min(limit, len(transfer))
    settings = train_settings(config, count, mode, epochs=epochs)
    student = build_student(
        config, labels=transfer.manifest.labels, clip_shape=transfer.manifest.clip_shape
    )
    # The run's pre-trained weights, from its cache (every rank computes the same if absent).
    pretrain_if_asked(
        config,
        student,
        transfer.manifest.clip_shape,
        checkpoints=run_dir / "checkpoints",
        show_progress=show_progress and rank == 0,
    )
    result = train_student(
        student,
        transfer,
        loss_fn,
        settings,
        limit=count,
        checkpoint=checkpoint,
        fingerprint=training_fingerprint(transfer, count, settings, config, extra=world_size),
        desc=f"train {count} queries x{world_size}",
        show_progress=show_progress,
        distributed=distributed,
    )
    mine: dict[str, Any] = {"rank": rank, "checksum": state_checksum(student)}
    if audit:
        shard = TransferDataset(
            transfer, limit=count, seed=settings.seed, rank=rank, world_size=world_size
        )
        mine["epoch0_records"] = [record.index for record in shard.epoch_records()]
    ranks = [mine] if distributed is None else distributed.gather(mine)
    if rank != 0:
        return None
    export = export_student(student, out or run_dir / "student-ddp").parent
    checksums = [r["checksum"] for r in ranks if isinstance(r, dict)]
    summary: dict[str, Any] = {
        "export": str(export),
        "queries": count,
        "loss": loss_fn.name,
        "epochs": result.epochs,
        "steps": result.steps,
        "seconds": round(result.seconds, 3),
        "world_size": world_size,
        "backend": "none" if distributed is None else distributed.backend,
        "final_loss": result.history[-1]["loss"] if result.history else None,
        "resumed_from_epoch": result.resumed_from_epoch,
        "checksums": checksums,
        "replicas_identical": len(set(checksums)) == 1,
    }
    if audit:
        summary["epoch0_records"] = [r["epoch0_records"] for r in ranks if isinstance(r, dict)]
    return summary


@app.command()
def main(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A finished run directory.")],
    epochs: Annotated[
        float | None, typer.Option(min=0.01, help="Passes over the data (default train.epochs).")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Train on the first N records (default: all).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Export directory (default: RUN_DIR/student-ddp).")
    ] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Save each epoch here (main rank) and resume from it.")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Progress bar on the main rank.")] = True,
    audit: Annotated[
        bool, typer.Option(help="Report each rank's first-epoch record indices.")
    ] = False,
) -> None:
    """Train a fresh student on RUN_DIR's transfer set (DDP under torchrun) and export it."""
    if not (run_dir / "config.resolved.yaml").is_file() or not (run_dir / "transfer").is_dir():
        typer.echo(f"error: {run_dir} has no config.resolved.yaml and transfer/", err=True)
        raise typer.Exit(code=2)
    with distributed_from_env() as distributed:
        summary = train_from_run(
            run_dir,
            distributed=distributed,
            epochs=epochs,
            limit=limit,
            out=out,
            checkpoint=checkpoint,
            show_progress=progress,
            audit=audit,
        )
        if summary is not None:
            typer.echo(json.dumps(summary))
        if distributed is not None:
            distributed.barrier()  # others wait until the export is written


if __name__ == "__main__":
    app(prog_name="python -m attacker.train.ddp")
