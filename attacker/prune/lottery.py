"""Iterative magnitude pruning of a stolen student, with three ways to retrain after each
pruning step (``rewind``):

- ``weights``: weight rewinding, the lottery-ticket procedure (Frankle & Carbin, 2019, with the
  rewinding of Frankle et al., 2020). Round 0 trains the dense student from its start weights
  and keeps the weights it had after ``rewind_step`` steps (the rewind point); each later round
  prunes, resets the survivors to the rewind point (norms, biases and BatchNorm statistics too)
  and trains again with the mask held.
- ``lr``: learning-rate rewinding (Renda, Frankle & Carbin, ICLR 2020): each round keeps the
  weights the previous round ended with, prunes, and retrains them with the learning-rate
  schedule rewound to its start (warm-up, then cosine decay).
- ``finetune``: keeps the trained weights too, but retrains at a small constant learning rate
  (``FINETUNE_LR_FRACTION`` of the run's; the end of the cosine schedule is close to zero).

Every round retrains with the clone's own recipe unless ``epochs`` says otherwise: the steps,
learning rate, warm-up and cosine decay of the run's last budget point (``plan: continual``:
``train.epochs`` passes over the clips that point added, drawn from the whole transfer set;
``plan: fresh``: ``train.epochs`` passes over every clip), the run's loss, a fresh optimiser.

Pruning is global by magnitude over every conv/linear weight. The rounds follow a geometric
schedule: round ``n`` of ``rounds`` reaches sparsity ``1 - (1 - rate)^n``, or with
``target_sparsity`` the rate is chosen so that the last round lands on it exactly. Every round
is measured on the same held-out clips.

With ``teacher_weight`` > 0 every round also distils the run's dense student (its outputs on
the same clips, no query paid; :mod:`attacker.prune.teacher`), next to the victim's answers.

Start weights (``start``): ``student``, the run's trained clone (lottery-ticket fine-tuning, as
for pre-trained networks in Chen et al., 2020), or ``init``, the run's own random
initialisation (the original procedure, which trains from scratch). With ``lr`` or
``finetune`` rewinding from the run's student, round 0 is that student as it is: it was already
trained with this recipe, so round 0 is not trained again.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from tqdm.auto import tqdm

from attacker.config import AttackConfig
from attacker.data import TransferSet
from attacker.eval.fidelity import EvalSet, Fidelity, evaluate
from attacker.prune.masks import (
    Masks,
    apply_masks,
    count_sparsity,
    dense_masks,
    make_permanent,
    masks_at_sparsity,
)
from attacker.prune.rewind import StepSnapshot, rewind
from attacker.prune.teacher import TeacherTerm, distillation_temperature
from attacker.stages.train import budget_points, build_run_loss, point_settings
from attacker.students import StudentModel
from attacker.train.loop import TrainSettings, batches_per_epoch, train_student
from shared.schemas import OutputMode

__all__ = ["PruneOutcome", "PruneSettings", "RoundResult", "run_lottery"]

Start = Literal["student", "init"]
Rewind = Literal["weights", "lr", "finetune"]
REWINDS: tuple[Rewind, ...] = ("weights", "lr", "finetune")
FINETUNE_LR_FRACTION = 0.01  # fine-tuning's constant learning rate, as a share of the run's


@dataclass(frozen=True)
class PruneSettings:
    rounds: int = 8  # pruning rounds after the dense round 0
    rate: float = 0.2  # fraction of the surviving weights pruned per round: 0.8^n remain
    target_sparsity: float | None = None  # if set, the last round's sparsity (rate derived)
    rewind: Rewind = "weights"
    rewind_step: int = 20  # weights: the weights after this many steps of round 0 (0: start)
    epochs: float | None = None  # passes over the transfer set per round (None: the recipe)
    start: Start = "student"
    lr: float | None = None  # default: the run's train.lr
    seed: int | None = None  # default: the run's seed
    teacher_weight: float = 0.0  # > 0: also distil the run's dense student (teacher.py)

    def __post_init__(self) -> None:
        if self.rounds < 0:
            raise ValueError(f"rounds must be >= 0, got {self.rounds}")
        if not 0.0 < self.rate < 1.0:
            raise ValueError(f"rate must be in (0, 1), got {self.rate}")
        if self.target_sparsity is not None:
            if not 0.0 < self.target_sparsity < 1.0:
                raise ValueError(f"target sparsity must be in (0, 1), got {self.target_sparsity}")
            if self.rounds < 1:
                raise ValueError("a target sparsity needs at least one round")
        if self.rewind not in REWINDS:
            raise ValueError(f"rewind must be one of {', '.join(REWINDS)}, got {self.rewind!r}")
        if self.rewind_step < 0:
            raise ValueError(f"rewind step must be >= 0, got {self.rewind_step}")
        if self.epochs is not None and self.epochs <= 0:
            raise ValueError(f"epochs must be positive, got {self.epochs}")
        if self.start not in ("student", "init"):
            raise ValueError(f"start must be student or init, got {self.start!r}")
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not self.teacher_weight >= 0:
            raise ValueError(f"teacher weight must be >= 0, got {self.teacher_weight}")

    @property
    def round_rate(self) -> float:
        """The fraction of surviving weights each round prunes."""
        if self.target_sparsity is None:
            return self.rate
        return 1.0 - (1.0 - self.target_sparsity) ** (1.0 / self.rounds)

    def target(self, round_index: int) -> float:
        """The sparsity round ``round_index`` prunes to (the last one: ``target_sparsity``)."""
        if self.target_sparsity is not None and round_index == self.rounds:
            return self.target_sparsity
        return 1.0 - (1.0 - self.round_rate) ** round_index

    @property
    def trains_round0(self) -> bool:
        """Weight rewinding needs round 0's run to its rewind point; the other rewinds start
        from the run's student as it is, unless they start from its initialisation."""
        return self.rewind == "weights" or self.start == "init"


@dataclass(frozen=True)
class RoundResult:
    round: int | None  # None: the run's own student, before any pruning round
    sparsity: float  # zero fraction of the conv/linear weights
    overall_sparsity: float  # zero fraction of all parameters
    remaining: int  # non-zero conv/linear weights
    fidelity: Fidelity
    steps: int = 0
    train_seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "round": self.round,
            "sparsity": round(self.sparsity, 5),
            "overall_sparsity": round(self.overall_sparsity, 5),
            "remaining_weights": self.remaining,
            **self.fidelity.to_dict(),
            "steps": self.steps,
            "train_seconds": round(self.train_seconds, 1),
        }


@dataclass
class PruneOutcome:
    settings: PruneSettings
    train: TrainSettings
    rows: list[RoundResult] = field(default_factory=list)
    model: StudentModel | None = None  # the last round's student, masks made permanent
    masks: Masks = field(default_factory=dict)  # the last round's masks
    rewind_state: dict[str, torch.Tensor] = field(default_factory=dict)
    rewind_taken_at: int = 0


RoundHook = Callable[[RoundResult], None]


def recipe_steps(config: AttackConfig, clips: int) -> int:
    """Optimiser steps of the run's last budget point on a transfer set of ``clips`` clips:
    ``train.epochs`` passes over the clips it added (continual) or over all of them (fresh)."""
    points = budget_points(config, clips)
    added = clips if config.train.plan == "fresh" or len(points) < 2 else clips - points[-2]
    return math.ceil(config.train.epochs * added / config.train.batch_size)


def round_train_settings(
    config: AttackConfig, transfer: TransferSet, settings: PruneSettings
) -> TrainSettings:
    """One round's training: the run's recipe (:func:`recipe_steps`, its warm-up and cosine)
    or ``settings.epochs`` passes over the whole transfer set; a constant small learning rate
    for ``finetune``."""
    if settings.epochs is None:
        steps = recipe_steps(config, len(transfer))
    else:
        batches = batches_per_epoch(len(transfer), config.train.batch_size)
        steps = math.ceil(settings.epochs * batches)
    base = point_settings(config, steps, transfer.manifest.output)
    lr = settings.lr or base.lr
    train = replace(base, lr=lr, seed=config.seed if settings.seed is None else settings.seed)
    if settings.rewind == "finetune":
        return replace(train, lr=lr * FINETUNE_LR_FRACTION, schedule="constant", warmup_steps=0)
    return train


def _measure(
    model: StudentModel, eval_set: EvalSet, index: int | None, steps: int, seconds: float
) -> RoundResult:
    count = count_sparsity(model)
    return RoundResult(
        round=index,
        sparsity=count.sparsity,
        overall_sparsity=count.overall,
        remaining=count.prunable - count.prunable_zero,
        fidelity=evaluate(model, eval_set),
        steps=steps,
        train_seconds=seconds,
    )


def run_lottery(
    config: AttackConfig,
    transfer: TransferSet,
    eval_set: EvalSet,
    *,
    trained: StudentModel,
    start: StudentModel,
    settings: PruneSettings,
    on_round: RoundHook | None = None,
    show_progress: bool = True,
) -> PruneOutcome:
    """Measure ``trained`` (the run's student), then round 0 and ``settings.rounds`` pruning
    rounds from ``start`` (trained in place; with ``settings.teacher_weight``, distilling a copy
    of ``trained`` too). Returns the rows and the last round's student."""
    run_loss = build_run_loss(config, OutputMode(transfer.manifest.output))
    teacher = (
        TeacherTerm(
            start,
            copy.deepcopy(trained),
            weight=settings.teacher_weight,
            temperature=distillation_temperature(run_loss),
        )
        if settings.teacher_weight > 0
        else None
    )
    loss = run_loss if teacher is None else teacher.loss(run_loss)
    train = round_train_settings(config, transfer, settings)
    outcome = PruneOutcome(settings=settings, train=train)

    def record(row: RoundResult) -> None:
        outcome.rows.append(row)
        if on_round is not None:
            on_round(row)

    record(_measure(trained, eval_set, None, 0, 0.0))
    model = start
    masks = dense_masks(model)
    bar = tqdm(total=settings.rounds + 1, desc="prune rounds", disable=not show_progress)
    for index in range(settings.rounds + 1):
        if index > 0:
            masks = masks_at_sparsity(model, masks, settings.target(index))
            if settings.rewind == "weights":
                rewind(model, outcome.rewind_state, masks)
            else:  # keep the trained weights; the schedule restarts (or stays constant)
                apply_masks(model, masks)
        began = time.perf_counter()
        steps = 0
        if index > 0 or settings.trains_round0:
            snapshot = (
                StepSnapshot(model, settings.rewind_step)
                if index == 0 and settings.rewind == "weights"
                else None
            )
            with snapshot or nullcontext(), teacher or nullcontext():
                steps = train_student(
                    model, transfer, loss, train, desc=f"round {index} train",
                    show_progress=show_progress,
                ).steps  # fmt: skip
            if snapshot is not None:
                outcome.rewind_state = snapshot.state
                outcome.rewind_taken_at = snapshot.taken_at
        row = _measure(model, eval_set, index, steps, time.perf_counter() - began)
        record(row)
        bar.update(1)
        bar.set_postfix(sparsity=f"{row.sparsity:.3f}", top1=f"{row.fidelity.top1_agreement:.3f}")
    bar.close()
    make_permanent(model)
    outcome.model = model
    outcome.masks = masks
    return outcome
