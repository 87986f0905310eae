"""Stage 2, train: the student, its loss and schedule, trained over the run's budget points.

``plan: continual`` (default) trains one student on as the transfer set grows, the way an
attacker works: at each budget point it adds ``epochs`` passes' worth of steps over the clips
that point added, every step drawing from all clips collected so far, with a fresh warm-up and
cosine decay. ``plan: fresh`` trains a new student per point (the older, costlier protocol).
After each point ``on_point(queries, student, result)`` runs (the run evaluates there).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from attacker.config import AttackConfig
from attacker.data import TransferSet
from attacker.students import (
    StudentModel,
    StudentPreprocessing,
    create_student,
    get_student_entry,
)
from attacker.train.loop import TrainResult, TrainSettings, batches_per_epoch, train_student
from attacker.train.losses import ExtractionLoss, build_loss_from_spec
from shared.schemas import OutputMode

__all__ = [
    "PointHook",
    "budget_points",
    "build_run_loss",
    "build_student",
    "point_settings",
    "train_over_points",
    "train_settings",
    "training_fingerprint",
]

PointHook = Callable[[int, StudentModel, TrainResult], None]


def build_student(
    config: AttackConfig,
    *,
    labels: Sequence[str],
    clip_shape: Sequence[int],
) -> StudentModel:
    """The configured student for the victim's labels and clip shape (frames, height, width),
    seeded by the run's seed, normalised with its own architecture's mean and std."""
    s = config.student
    entry = get_student_entry(s.architecture)
    frames, height, width = (int(v) for v in clip_shape[:3])
    prep = StudentPreprocessing(
        frames=s.frames or frames,
        height=s.height or height,
        width=s.width or width,
        mean=entry.mean,
        std=entry.std,
    )
    torch.manual_seed(config.seed)
    return create_student(
        s.architecture,
        num_classes=len(labels),
        preprocessing=prep,
        labels=labels,
        backbone_weights=s.backbone_weights,
        **s.kwargs,
    )


def build_run_loss(config: AttackConfig, mode: OutputMode | str) -> ExtractionLoss:
    """The run's loss for a key answering in ``mode`` (``auto`` resolved)."""
    return build_loss_from_spec(
        config.train.loss_spec(mode), mode, true_label_weight=config.train.true_label_weight
    )


def budget_points(config: AttackConfig, clips: int) -> list[int]:
    """Transfer-set sizes at which the student is evaluated (``eval.points`` of ``clips``)."""
    return sorted({max(1, round(fraction * clips)) for fraction in config.eval.points})


def train_settings(
    config: AttackConfig, clips: int, *, epochs: float | None = None
) -> TrainSettings:
    """Settings to train a fresh student on ``clips`` clips for ``epochs`` passes (default
    ``train.epochs``), at least ``train.min_steps`` steps, capped by ``train.max_clip_steps``."""
    batches = batches_per_epoch(clips, config.train.batch_size)
    return point_settings(config, math.ceil((epochs or config.train.epochs) * batches))


def point_settings(config: AttackConfig, steps: int) -> TrainSettings:
    t = config.train
    steps = max(steps, t.min_steps, 1)
    if t.max_clip_steps is not None:
        steps = max(1, min(steps, t.max_clip_steps // t.batch_size))
    return TrainSettings(
        epochs=1,
        steps=steps,
        batch_size=t.batch_size,
        lr=t.lr,
        backbone_lr_ratio=t.backbone_lr_ratio,
        weight_decay=t.weight_decay,
        schedule=t.schedule,
        warmup_steps=min(t.warmup_steps, max(1, steps // 5)),
        seed=config.seed,
        precision=t.precision,
    )


def _continual_steps(config: AttackConfig, added: int) -> int:
    return math.ceil(config.train.epochs * added / config.train.batch_size)


def training_fingerprint(
    transfer: TransferSet,
    limit: int,
    settings: TrainSettings,
    config: AttackConfig,
    *,
    extra: object = None,
) -> str:
    """Identifies what a checkpoint was trained on (data, settings, student, train section), so
    a rerun resumes only the same training."""
    payload = json.dumps(
        [
            [r.clip_hash for r in transfer.records[:limit]],
            asdict(settings),
            config.student.model_dump(mode="json"),
            config.train.model_dump(mode="json"),
            extra,
        ],
        sort_keys=True,
        default=str,
    )
    return hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()


def train_over_points(
    config: AttackConfig,
    transfer: TransferSet,
    *,
    on_point: PointHook,
    checkpoints: Path | None = None,
    show_progress: bool = True,
) -> StudentModel:
    """Train per ``config.train.plan`` over the budget points; returns the last student."""
    if config.train.threads > 0:
        torch.set_num_threads(config.train.threads)
    manifest = transfer.manifest
    mode = OutputMode(manifest.output)
    loss = build_run_loss(config, mode)
    points = budget_points(config, len(transfer))
    student: StudentModel | None = None
    previous = 0
    for index, limit in enumerate(points):
        if config.train.plan == "fresh" or student is None:
            student = build_student(config, labels=manifest.labels, clip_shape=manifest.clip_shape)
        if config.train.plan == "fresh":
            settings = train_settings(config, limit)
        else:
            settings = point_settings(config, _continual_steps(config, limit - previous))
        result = train_student(
            student,
            transfer,
            loss,
            settings,
            limit=limit,
            checkpoint=None if checkpoints is None else checkpoints / f"q{limit}.pt",
            fingerprint=training_fingerprint(
                transfer, limit, settings, config, extra=[config.train.plan, points[: index + 1]]
            ),
            desc=f"train {limit} queries",
            show_progress=show_progress,
        )
        on_point(limit, student, result)
        previous = limit
    assert student is not None
    return student
