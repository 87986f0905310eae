"""Train a student on (a prefix of) the transfer set: AdamW, lower backbone LR, cosine or
reduce-on-plateau, checkpoint and resume, a progress bar; optionally under torchrun with DDP
(see :mod:`attacker.train.distributed`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from attacker.data import TransferDataset, TransferSet, collate
from attacker.students import StudentModel, student_preprocess
from attacker.train.distributed import DistributedContext
from attacker.train.losses import LossFn, targets_from_results
from shared.schemas import OutputMode


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 20
    batch_size: int = 64
    lr: float = 2e-3
    backbone_lr_ratio: float = 1.0
    weight_decay: float = 0.05
    schedule: str = "cosine"  # cosine | plateau
    warmup_steps: int = 50
    grad_clip: float = 2.0
    seed: int = 0


@dataclass
class TrainResult:
    steps: int = 0
    epochs: int = 0
    seconds: float = 0.0
    resumed_from_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


EpochHook = Callable[[int, StudentModel], float | None]  # (epoch, model) -> plateau metric


def build_optimizer(model: StudentModel, settings: TrainSettings) -> torch.optim.AdamW:
    """Two parameter groups: the head at ``lr``, the backbone at ``lr * backbone_lr_ratio``."""
    return torch.optim.AdamW(
        [
            {
                "params": list(model.backbone_parameters()),
                "lr": settings.lr * settings.backbone_lr_ratio,
                "name": "backbone",
            },
            {"params": list(model.head_parameters()), "lr": settings.lr, "name": "head"},
        ],
        weight_decay=settings.weight_decay,
    )


def _cosine_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train_student(
    model: StudentModel,
    transfer: TransferSet,
    loss_fn: LossFn,
    settings: TrainSettings,
    *,
    limit: int | None = None,
    checkpoint: Path | None = None,
    fingerprint: str = "",
    on_epoch_end: EpochHook | None = None,
    desc: str = "train",
    show_progress: bool = True,
    distributed: DistributedContext | None = None,
) -> TrainResult:
    """Train in place. With ``checkpoint``, state is saved each epoch and a rerun resumes from it
    (only if its ``fingerprint`` -- data and settings -- matches; otherwise training restarts).

    With ``distributed`` (every rank calls this with the same arguments), each rank trains on its
    shard of every epoch with ``settings.batch_size`` as the global batch, so steps and learning
    rates are those of one process; the model is wrapped in DDP for the duration, only the main
    rank shows progress and writes the checkpoint, and the history holds losses averaged over
    all ranks. ``on_epoch_end`` runs on every rank; the main rank's metric drives the plateau
    schedule everywhere.
    """
    config = model.student_config
    mode = OutputMode(transfer.manifest.output)
    rank, world_size = (0, 1) if distributed is None else (distributed.rank, distributed.world_size)
    is_main = rank == 0
    batch_size = -(-settings.batch_size // world_size)  # this rank's share of the global batch
    dataset = TransferDataset(
        transfer,
        limit=limit,
        shuffle=True,
        seed=settings.seed,
        rank=rank,
        world_size=world_size,
    )
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
    steps_per_epoch = math.ceil(len(dataset) / batch_size)
    total_steps = steps_per_epoch * settings.epochs
    # DDP moves the model to the rank's device first, so the optimiser state lives there too.
    net: nn.Module = model if distributed is None else distributed.wrap(model)
    device = next(model.parameters()).device
    optimizer = build_optimizer(model, settings)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    plateau = (
        torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=2)
        if settings.schedule == "plateau"
        else None
    )
    result = TrainResult()
    start_epoch = 0
    if checkpoint is not None and checkpoint.is_file():
        start_epoch = _load_checkpoint(checkpoint, model, optimizer, fingerprint)
        result.resumed_from_epoch = start_epoch
    if distributed is not None:
        distributed.agree(start_epoch, "the epoch to resume from")
    step = start_epoch * steps_per_epoch
    started = time.perf_counter()
    bar = tqdm(
        total=total_steps,
        initial=step,
        desc=desc,
        disable=not (show_progress and is_main),
        unit="step",
        leave=False,
    )
    for epoch in range(start_epoch, settings.epochs):
        model.train()
        dataset.set_epoch(epoch)
        running, seen = 0.0, 0
        for batch in loader:
            if plateau is None:
                factor = _cosine_factor(step, total_steps, settings.warmup_steps)
                for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                    group["lr"] = base * factor
            x = student_preprocess(batch.clips, config.preprocessing).to(device)
            targets = targets_from_results(
                batch.results, config.num_classes, mode, batch.true_labels
            )
            parts = loss_fn(net(x), targets)
            optimizer.zero_grad(set_to_none=True)
            parts.total.backward()
            nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimizer.step()
            step += 1
            running += parts.total.item() * len(batch.results)
            seen += len(batch.results)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{parts.total.item():.3f}")
        metric = on_epoch_end(epoch, model) if on_epoch_end is not None else None
        if distributed is not None:
            metric = distributed.broadcast_float(metric)
            running, total = distributed.sum([running, seen])
            seen = round(total)
        if plateau is not None and metric is not None:
            plateau.step(metric)
        entry = {"epoch": epoch + 1, "loss": running / max(1, seen)}
        if metric is not None:
            entry["metric"] = metric
        result.history.append(entry)
        if checkpoint is not None and is_main:
            _save_checkpoint(checkpoint, model, optimizer, epoch + 1, fingerprint)
    bar.close()
    if distributed is not None:
        distributed.unwrap(model)
    model.eval()
    result.steps = step
    result.epochs = settings.epochs
    result.seconds = time.perf_counter() - started
    return result


def _save_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int, fingerprint: str
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "fingerprint": fingerprint,
        },
        tmp,
    )
    tmp.replace(path)


def _load_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, fingerprint: str
) -> int:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != fingerprint:
        return 0  # another run's checkpoint: start over
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["epoch"])
