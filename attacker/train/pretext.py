"""Pre-training on the query source's own recipes (``train.pretext``), before any answer is used.

The attacker made every clip of its source, so it knows how each one moves: its recipe names
that (a sprite's path, whether it pulses, which way the camera turns, ... :class:`RecipeFactors`).
A student trained to read those factors off unpaid clips starts distilling with features for
motion instead of from random weights, which is worth most at small budgets (README, "Pre-training
on the source's recipes"). It costs CPU, never a query: ``steps`` optimiser steps on ``clips``
clips drawn from the run's source under a seed of their own (not the clips it pays for), one
linear head per factor over the student's pooled features, cross-entropy summed over the factors
each clip has. Only the backbone is kept; the pre-trained weights are cached by everything that
determines them, so a rerun or another budget of the same attack reuses them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from attacker.sources import (
    ClipShape,
    SourceConfigBase,
    SourceError,
    build_source,
    factor_classes,
    recipe_factors,
)
from attacker.sources._base import RECIPE_VERSION, derive_seed
from attacker.students import StudentModel, student_preprocess
from attacker.train.loop import TrainSettings, autocast_dtype, build_optimizer, cosine_factor

__all__ = [
    "FactorClips",
    "PretextResult",
    "PretextSettings",
    "draw_factor_clips",
    "pretrain_on_recipes",
    "pretrain_student",
]

# Part of every cache key: bump it when what pre-training does changes, so no stale weights load.
_PRETEXT_VERSION: Final = 1
_PRETEXT_STREAM: Final = 61  # the pre-training clips' seed, apart from the paid stream's
_HELD_OUT_FRACTION: Final = 0.05
_MAX_HELD_OUT: Final = 1000
_MISSING: Final = -1  # a factor the clip does not have


@dataclass(frozen=True)
class PretextSettings:
    steps: int
    clips: int
    batch_size: int = 64
    lr: float = 6e-3
    weight_decay: float = 0.05
    warmup_steps: int = 50
    grad_clip: float = 2.0
    precision: str = "auto"
    seed: int = 0


@dataclass(frozen=True)
class PretextResult:
    """What pre-training did: its steps, clips and seconds, each factor's accuracy on held-out
    pre-training clips (how well the student reads it; chance is 1 / its values), and whether
    the weights came from the cache."""

    steps: int
    clips: int
    seconds: float
    factor_accuracy: dict[str, float]
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FactorClips:
    """Clips (N, T, H, W, 3) uint8 and their factor values (N, F), ``-1`` where a clip does not
    have factor ``names[f]``; ``classes[f]`` is that factor's number of values."""

    clips: np.ndarray
    targets: np.ndarray
    names: tuple[str, ...]
    classes: tuple[int, ...]


def draw_factor_clips(
    source_config: SourceConfigBase,
    *,
    shape: ClipShape,
    seed: int,
    clips: int,
    show_progress: bool = True,
) -> FactorClips:
    """``clips`` clips of the source (its own pre-training seed) that have at least one factor;
    fewer if the source runs out first (none: :class:`SourceError`)."""
    classes = factor_classes(source_config)
    names = tuple(classes)
    source = build_source(source_config, shape=shape, seed=derive_seed(seed, _PRETEXT_STREAM, 0))
    kept: list[np.ndarray] = []
    rows: list[list[int]] = []
    bar = tqdm(total=clips, desc="pretext clips", disable=not show_progress, leave=False)
    for query in source:
        factors = recipe_factors(query.recipe)
        if not factors:  # e.g. a natural clip of a mix
            continue
        kept.append(query.clip)
        rows.append([factors.get(name, _MISSING) for name in names])
        bar.update(1)
        if len(kept) == clips:
            break
    bar.close()
    if not kept:
        raise SourceError(f"source {source_config.kind!r} gave no clip with motion factors")
    return FactorClips(
        clips=np.stack(kept),
        targets=np.asarray(rows, dtype=np.int64),
        names=names,
        classes=tuple(classes[name] for name in names),
    )


class _FactorHeads(nn.Module):
    """One linear read-out per factor, over the student's pooled features."""

    def __init__(self, features: int, classes: tuple[int, ...]) -> None:
        super().__init__()
        self.linear = nn.Linear(features, sum(classes))
        self.bounds = [0, *itertools.accumulate(classes)]

    def forward(self, features: torch.Tensor) -> list[torch.Tensor]:
        out = self.linear(features)
        return [out[:, a:b] for a, b in itertools.pairwise(self.bounds)]


def _factor_loss(logits: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    losses = [
        F.cross_entropy(out, targets[:, f], ignore_index=_MISSING)
        for f, out in enumerate(logits)
        if bool((targets[:, f] != _MISSING).any())
    ]
    return torch.stack(losses).sum()


def pretrain_student(
    student: StudentModel,
    data: FactorClips,
    settings: PretextSettings,
    *,
    show_progress: bool = True,
) -> PretextResult:
    """Train ``student``'s backbone in place to read ``data``'s factors; its classifier head is
    left as it was. A slice of the clips is held out to measure each factor's accuracy."""
    started = time.perf_counter()
    held_out = min(_MAX_HELD_OUT, int(len(data.clips) * _HELD_OUT_FRACTION))
    train_rows = len(data.clips) - held_out
    prep = student.student_config.preprocessing
    device = next(student.parameters()).device
    heads = _FactorHeads(student.num_features, data.classes).to(device)
    optimizer = build_optimizer(
        student,
        TrainSettings(lr=settings.lr, weight_decay=settings.weight_decay),
    )
    optimizer.add_param_group(
        {"params": list(heads.parameters()), "lr": settings.lr, "weight_decay": 0.0}
    )
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    amp = autocast_dtype(settings.precision, device)
    targets = torch.from_numpy(data.targets)
    rng = np.random.default_rng([settings.seed, _PRETEXT_STREAM])
    batch = min(settings.batch_size, train_rows)
    student.train()
    heads.train()
    params = [*student.parameters(), *heads.parameters()]
    for step in tqdm(range(settings.steps), desc="pretext", disable=not show_progress, leave=False):
        factor = cosine_factor(step, settings.steps, settings.warmup_steps)
        for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
            group["lr"] = base * factor
        rows = np.sort(rng.choice(train_rows, batch, replace=False))
        x = student_preprocess(data.clips[rows], prep).to(device)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = heads(student.forward_features(x).float())
        loss = _factor_loss([out.float() for out in logits], targets[rows].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, settings.grad_clip)
        optimizer.step()
    student.eval()
    heads.eval()
    accuracy = _held_out_accuracy(student, heads, data, range(train_rows, len(data.clips)))
    return PretextResult(
        steps=settings.steps,
        clips=len(data.clips),
        seconds=round(time.perf_counter() - started, 1),
        factor_accuracy=accuracy,
    )


@torch.no_grad()
def _held_out_accuracy(
    student: StudentModel, heads: _FactorHeads, data: FactorClips, rows: range
) -> dict[str, float]:
    hits = np.zeros(len(data.names))
    counts = np.zeros(len(data.names))
    prep = student.student_config.preprocessing
    device = next(student.parameters()).device
    for start in range(rows.start, rows.stop, 64):
        chunk = slice(start, min(start + 64, rows.stop))
        x = student_preprocess(data.clips[chunk], prep).to(device)
        logits = heads(student.forward_features(x).float())
        truth = data.targets[chunk]
        for f, out in enumerate(logits):
            has = truth[:, f] != _MISSING
            hits[f] += float((out.argmax(1).cpu().numpy() == truth[:, f])[has].sum())
            counts[f] += float(has.sum())
    return {
        name: round(float(hits[f] / counts[f]), 4)
        for f, name in enumerate(data.names)
        if counts[f] > 0
    }


def pretext_key(
    source_config: SourceConfigBase,
    student: StudentModel,
    shape: ClipShape,
    settings: PretextSettings,
) -> str:
    """What determines the pre-trained weights: the source, the student (its config and its
    initial weights), the clip shape, the settings (seed included), the recipe format and the
    version of this module's method."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(student.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy())
    payload = json.dumps(
        [
            source_config.model_dump(mode="json"),
            student.student_config.to_dict(),
            digest.hexdigest(),
            shape.as_list(),
            asdict(settings),
            RECIPE_VERSION,
            _PRETEXT_VERSION,
        ],
        sort_keys=True,
        default=str,
    )
    return hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()


def pretrain_on_recipes(
    student: StudentModel,
    source_config: SourceConfigBase,
    *,
    shape: ClipShape,
    settings: PretextSettings,
    cache: Path | None = None,
    show_progress: bool = True,
) -> PretextResult:
    """Pre-train ``student`` in place on its source's recipes, or load the weights a previous
    run cached under ``cache`` for the same source, student, shape and settings."""
    path = None
    if cache is not None:
        path = cache / f"pretext-{pretext_key(source_config, student, shape, settings)}.pt"
        if path.is_file():
            state = torch.load(path, map_location="cpu", weights_only=True)
            student.load_state_dict(state["model"])
            student.eval()
            return PretextResult(**{**state["result"], "cached": True})
    data = draw_factor_clips(
        source_config,
        shape=shape,
        seed=settings.seed,
        clips=settings.clips,
        show_progress=show_progress,
    )
    result = pretrain_student(student, data, settings, show_progress=show_progress)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")  # DDP ranks may write it at once
        torch.save({"model": student.state_dict(), "result": result.to_dict()}, tmp)
        tmp.replace(path)
    return result
