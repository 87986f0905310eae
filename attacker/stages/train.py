"""Stage 2, train: the student, its loss and schedule, trained over the run's budget points.

``plan: continual`` (default) trains one student on as the transfer set grows, the way an
attacker works: at each budget point it adds ``epochs`` passes' worth of steps over the clips
that point added, every step drawing from all clips collected so far, with a fresh warm-up and
cosine decay. ``plan: fresh`` trains a new student per point (the older, costlier protocol).
With ``train.pretext`` every new student first learns the source's recipes (pretext.py).
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
from attacker.data import TransferManifest, TransferSet
from attacker.sources import ClipShape
from attacker.students import (
    StudentModel,
    StudentPreprocessing,
    create_student,
    get_student_entry,
)
from attacker.train.loop import TrainResult, TrainSettings, batches_per_epoch, train_student
from attacker.train.losses import ExtractionLoss, build_loss_from_spec
from attacker.train.pretext import PretextResult, PretextSettings, pretrain_on_recipes
from attacker.train.process import prepare_training_process
from shared.schemas import OutputMode

__all__ = [
    "ContinualTrainer",
    "PointHook",
    "budget_points",
    "build_run_loss",
    "build_student",
    "point_settings",
    "pretext_settings",
    "pretrain_if_asked",
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
    config: AttackConfig, clips: int, mode: OutputMode | str, *, epochs: float | None = None
) -> TrainSettings:
    """Settings to train a fresh student on ``clips`` clips for ``epochs`` passes (default
    ``train.epochs``), at least ``train.min_steps`` steps, capped by ``train.max_clip_steps``."""
    batches = batches_per_epoch(clips, config.train.batch_size)
    return point_settings(config, math.ceil((epochs or config.train.epochs) * batches), mode)


def point_settings(config: AttackConfig, steps: int, mode: OutputMode | str) -> TrainSettings:
    """``steps`` optimiser steps of the run's recipe, at the learning rate for answers in
    ``mode`` (``train.lr_for``)."""
    t = config.train
    steps = max(steps, t.min_steps, 1)
    if t.max_clip_steps is not None:
        steps = max(1, min(steps, t.max_clip_steps // t.batch_size))
    return TrainSettings(
        epochs=1,
        steps=steps,
        batch_size=t.batch_size,
        lr=t.lr_for(mode),
        backbone_lr_ratio=t.backbone_lr_ratio,
        weight_decay=t.weight_decay,
        schedule=t.schedule,
        warmup_steps=min(t.warmup_steps, max(1, steps // 5)),
        seed=config.seed,
        precision=t.precision,
        mixup=t.mixup,
    )


def pretext_settings(config: AttackConfig) -> PretextSettings | None:
    """The run's ``train.pretext`` as settings (the recipe's optimiser, precision and seed), or
    None when it is off."""
    p, t = config.train.pretext, config.train
    if p is None:
        return None
    return PretextSettings(
        steps=p.steps,
        clips=p.clips,
        batch_size=p.batch_size,
        lr=p.lr or t.lr,
        weight_decay=t.weight_decay,
        warmup_steps=min(t.warmup_steps, max(1, p.steps // 5)),
        precision=t.precision,
        seed=config.seed,
    )


def pretrain_if_asked(
    config: AttackConfig,
    student: StudentModel,
    clip_shape: Sequence[int],
    *,
    checkpoints: Path | None,
    show_progress: bool = True,
) -> PretextResult | None:
    """Pre-train ``student`` in place on the query source's recipes if ``train.pretext`` is on
    (cached in its ``cache_dir``, else in ``checkpoints``); None when it is off."""
    settings = pretext_settings(config)
    pretext = config.train.pretext
    if settings is None or pretext is None:
        return None
    return pretrain_on_recipes(
        student,
        config.query.source,
        shape=ClipShape(*(int(v) for v in clip_shape[:3])),
        settings=settings,
        cache=pretext.cache_dir or checkpoints,
        show_progress=show_progress,
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


class ContinualTrainer:
    """One student trained on as the transfer set grows (``plan: continual``): each
    :meth:`advance` adds ``train.epochs`` passes' worth of steps over the clips added since the
    last call, every step drawing from all clips so far. With ``plan: fresh`` each call trains a
    new student on the clips so far instead. Checkpoints resume a rerun of the same training."""

    def __init__(
        self,
        config: AttackConfig,
        manifest: TransferManifest,
        *,
        checkpoints: Path | None = None,
        show_progress: bool = True,
    ) -> None:
        prepare_training_process(config.train.threads)
        self.config = config
        self.manifest = manifest
        self.loss = build_run_loss(config, OutputMode(manifest.output))
        self.checkpoints = checkpoints
        self.show_progress = show_progress
        self.student: StudentModel | None = None
        self.trained_to: list[int] = []  # the transfer-set sizes trained at so far
        self.pretext: PretextResult | None = None
        self._pretext_state: dict[str, torch.Tensor] | None = None

    def _new_student(self) -> StudentModel:
        """A new student, pre-trained on the source's recipes first when ``train.pretext`` asks
        (once per trainer: a fresh plan's later students reuse the cached weights)."""
        config = self.config
        student = build_student(
            config, labels=self.manifest.labels, clip_shape=self.manifest.clip_shape
        )
        if self._pretext_state is not None:
            student.load_state_dict(self._pretext_state)
            return student
        self.pretext = pretrain_if_asked(
            config,
            student,
            self.manifest.clip_shape,
            checkpoints=self.checkpoints,
            show_progress=self.show_progress,
        )
        if self.pretext is not None:
            self._pretext_state = {k: v.clone() for k, v in student.state_dict().items()}
        return student

    def advance(self, transfer: TransferSet, limit: int) -> TrainResult:
        """Train on the first ``limit`` clips of ``transfer`` (the student is :attr:`student`)."""
        config = self.config
        fresh = config.train.plan == "fresh"
        student = self.student
        built = fresh or student is None
        if fresh or student is None:
            student = self.student = self._new_student()
        mode = self.manifest.output
        if fresh:
            settings = train_settings(config, limit, mode)
        else:
            previous = self.trained_to[-1] if self.trained_to else 0
            settings = point_settings(config, _continual_steps(config, limit - previous), mode)
        self.trained_to.append(limit)
        result = train_student(
            student,
            transfer,
            self.loss,
            settings,
            limit=limit,
            checkpoint=None if self.checkpoints is None else self.checkpoints / f"q{limit}.pt",
            fingerprint=training_fingerprint(
                transfer, limit, settings, config, extra=[config.train.plan, self.trained_to]
            ),
            desc=f"train {limit} queries",
            show_progress=self.show_progress,
        )
        if built and self.pretext is not None:
            result.pretext = self.pretext.to_dict()
        return result


def train_over_points(
    config: AttackConfig,
    transfer: TransferSet,
    *,
    on_point: PointHook,
    checkpoints: Path | None = None,
    show_progress: bool = True,
) -> StudentModel:
    """Train per ``config.train.plan`` over the budget points; returns the last student."""
    trainer = ContinualTrainer(
        config, transfer.manifest, checkpoints=checkpoints, show_progress=show_progress
    )
    for limit in budget_points(config, len(transfer)):
        result = trainer.advance(transfer, limit)
        assert trainer.student is not None
        on_point(limit, trainer.student, result)
    if trainer.student is None:
        raise ValueError("the transfer set is empty: nothing to train on")
    return trainer.student
