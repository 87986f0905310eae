"""Train a student on (a prefix of) the transfer set: AdamW (no decay on norms and biases, a
lower LR on the backbone), warm-up then cosine or reduce-on-plateau, checkpoint and resume, a
progress bar; optionally under torchrun with DDP (see :mod:`attacker.train.distributed`).

A call trains for ``settings.steps`` optimiser steps when given (whole passes over the data, the
last one cut short), else for ``settings.epochs`` passes. Continual training (one student trained
on as the transfer set grows) calls it once per budget point on the same model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from attacker.data import TransferDataset, TransferSet, collate
from attacker.data.dataset import TransferBatch
from attacker.students import StudentModel, student_preprocess
from attacker.train.distributed import DistributedContext
from attacker.train.losses import LossFn, targets_from_results
from attacker.train.mixup import mix_batch, mixed_loss
from shared.schemas import OutputMode


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 20
    batch_size: int = 64
    lr: float = 2e-3
    backbone_lr_ratio: float = 1.0
    weight_decay: float = 0.05
    schedule: str = "cosine"  # cosine | plateau | constant (after the warm-up)
    warmup_steps: int = 50
    grad_clip: float = 2.0
    seed: int = 0
    steps: int | None = None  # optimiser steps of this call (default: epochs x batches)
    precision: str = "auto"  # auto | bf16 | fp32: see ``autocast_dtype``
    mixup: float = 0.0  # Beta(alpha, alpha) mixup of each batch's clips (0: off); see mixup.py


@dataclass
class TrainResult:
    steps: int = 0
    epochs: int = 0
    seconds: float = 0.0
    resumed_from_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    # The pre-training on the source's recipes the student had before this call, if it was
    # built for it (``PretextResult.to_dict()``; attacker/train/pretext.py).
    pretext: dict[str, Any] | None = None


EpochHook = Callable[[int, StudentModel], float | None]  # (epoch, model) -> plateau metric


def _is_no_decay(name: str, parameter: nn.Parameter) -> bool:
    """Norm scales and biases are not weight-decayed (decaying them only fights the norm)."""
    return parameter.ndim <= 1 or name.endswith(".bias")


def build_optimizer(model: StudentModel, settings: TrainSettings) -> torch.optim.AdamW:
    """Four parameter groups: backbone and head (the backbone at ``lr * backbone_lr_ratio``),
    each split into weight-decayed weights and undecayed norms/biases."""
    backbone = {id(p) for p in model.backbone_parameters()}
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        part = "backbone" if id(parameter) in backbone else "head"
        groups.setdefault((part, _is_no_decay(name, parameter)), []).append(parameter)
    return torch.optim.AdamW(
        [
            {
                "params": params,
                "lr": settings.lr * (settings.backbone_lr_ratio if part == "backbone" else 1.0),
                "weight_decay": 0.0 if no_decay else settings.weight_decay,
                "name": f"{part}{'-no-decay' if no_decay else ''}",
            }
            for (part, no_decay), params in sorted(groups.items())
        ]
    )


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype to autocast the forward pass to, or None for float32.

    ``auto``: bfloat16 on a CPU with native bf16 matrix units (AMX or AVX512-BF16, where oneDNN
    runs 3D convolutions about twice as fast) and on CUDA devices that support it; float32
    elsewhere. Weights, optimiser state and the loss stay float32 either way.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    cpu = getattr(torch, "cpu", None)
    amx = getattr(cpu, "_is_amx_tile_supported", lambda: False)()
    avx512_bf16 = getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
    return torch.bfloat16 if amx or avx512_bf16 else None


def cosine_factor(step: int, total: int, warmup: int) -> float:
    """The learning rate's multiplier at ``step`` of ``total``: linear warm-up, then cosine."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _smallest_batch(clips: int, batch_size: int) -> int:
    """A last batch of fewer than half ``batch_size`` clips is skipped: a few clips would set
    BatchNorm's running statistics and take a full optimiser step alone. (A data set smaller
    than that is one batch.)"""
    return min(clips, -(-batch_size // 2))


def batches_per_epoch(clips: int, batch_size: int) -> int:
    full, rest = divmod(clips, batch_size)
    return full + (1 if rest and rest >= _smallest_batch(clips, batch_size) else 0)


def full_batches(
    loader: Iterable[TransferBatch], clips: int, batch_size: int
) -> Iterator[TransferBatch]:
    """The loader's batches, less a last one that is too small (see ``_smallest_batch``)."""
    smallest = _smallest_batch(clips, batch_size)
    for batch in loader:
        if len(batch.results) >= smallest:
            yield batch


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
    all ranks. ``on_epoch_end`` runs on every rank; its metric (higher is better) drives the
    plateau schedule, else the epoch's mean training loss does.
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
    steps_per_epoch = batches_per_epoch(len(dataset), batch_size)
    total_steps = settings.steps or steps_per_epoch * settings.epochs
    epochs = math.ceil(total_steps / steps_per_epoch)
    # DDP moves the model to the rank's device first, so the optimiser state lives there too.
    net: nn.Module = model if distributed is None else distributed.wrap(model)
    device = next(model.parameters()).device
    optimizer = build_optimizer(model, settings)
    amp = autocast_dtype(settings.precision, device)
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
    step = min(total_steps, start_epoch * steps_per_epoch)
    started = time.perf_counter()
    bar = tqdm(
        total=total_steps,
        initial=step,
        desc=desc,
        disable=not (show_progress and is_main),
        unit="step",
        leave=False,
    )
    for epoch in range(start_epoch, epochs):
        model.train()
        dataset.set_epoch(epoch)
        sums: dict[str, float] = {}
        seen = 0
        batches: Iterable[TransferBatch] = loader
        for batch in full_batches(batches, len(dataset), batch_size):
            if step >= total_steps:
                break
            if plateau is None:
                factor = (
                    cosine_factor(step, total_steps, settings.warmup_steps)
                    if settings.schedule == "cosine"
                    else min(1.0, (step + 1) / max(1, settings.warmup_steps))  # constant
                )
                for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                    group["lr"] = base * factor
            elif step < settings.warmup_steps:
                for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                    group["lr"] = base * (step + 1) / settings.warmup_steps
            x = student_preprocess(batch.clips, config.preprocessing).to(device)
            targets = targets_from_results(
                batch.results, config.num_classes, mode, batch.true_labels
            )
            mixed = (
                mix_batch(x, settings.mixup, seed=settings.seed, step=step)
                if settings.mixup > 0
                else None
            )
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                logits = net(x if mixed is None else mixed.clips)
            parts = (
                loss_fn(logits.float(), targets)
                if mixed is None
                else mixed_loss(loss_fn, logits.float(), targets, mixed)
            )
            optimizer.zero_grad(set_to_none=True)
            parts.total.backward()
            nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimizer.step()
            step += 1
            count = len(batch.results)
            for name, value in parts.as_floats().items():
                sums[name] = sums.get(name, 0.0) + value * count
            seen += count
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{parts.total.item():.3f}")
        metric = on_epoch_end(epoch, model) if on_epoch_end is not None else None
        if distributed is not None:
            metric = distributed.broadcast_float(metric)
            names = sorted(sums)
            totals = distributed.sum([*(sums[n] for n in names), seen])
            sums, seen = dict(zip(names, totals[:-1], strict=True)), round(totals[-1])
        means = {name: value / max(1, seen) for name, value in sums.items()}
        if plateau is not None and step >= settings.warmup_steps:
            plateau.step(metric if metric is not None else -means.get("loss", 0.0))
        entry = {"epoch": epoch + 1, "steps": step, **means}
        entry.setdefault("loss", 0.0)
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
    result.epochs = epochs
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
