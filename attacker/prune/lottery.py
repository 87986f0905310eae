"""Iterative magnitude pruning with weight rewinding (the lottery-ticket procedure of Frankle &
Carbin, 2019, with the rewinding of Frankle et al., 2020), applied to a stolen student.

Round 0 trains the dense student from its start weights for ``epochs`` passes over the transfer
set and keeps the weights it had after ``rewind_step`` steps (the rewind point). Each later
round prunes ``rate`` of the surviving conv/linear weights, globally by magnitude of the weights
the previous round ended with, rewinds the survivors to the rewind point (norms, biases and
BatchNorm statistics too) and trains again for ``epochs`` passes with the mask held. Every round
is measured on the same held-out clips.

Start weights (``start``): ``student``, the run's trained clone (lottery-ticket fine-tuning, as
for pre-trained networks in Chen et al., 2020), or ``init``, the run's own random
initialisation (the original procedure, which trains from scratch in every round).

Each round trains with a fresh optimiser and the run's warm-up + cosine schedule; rewinding
restores weights, not optimiser state or the schedule's position.
"""

from __future__ import annotations

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
    count_sparsity,
    dense_masks,
    global_magnitude_masks,
    make_permanent,
)
from attacker.prune.rewind import StepSnapshot, rewind
from attacker.stages.train import build_run_loss, point_settings
from attacker.students import StudentModel
from attacker.train.loop import TrainSettings, batches_per_epoch, train_student
from shared.schemas import OutputMode

__all__ = ["PruneOutcome", "PruneSettings", "RoundResult", "run_lottery"]

Start = Literal["student", "init"]


@dataclass(frozen=True)
class PruneSettings:
    rounds: int = 8  # pruning rounds after the dense round 0
    rate: float = 0.2  # fraction of the surviving weights pruned per round: 0.8^n remain
    rewind_step: int = 20  # rewind point: weights after this many steps of round 0 (0: start)
    epochs: float = 2.0  # passes over the transfer set per round
    start: Start = "student"
    lr: float | None = None  # default: the run's train.lr
    seed: int | None = None  # default: the run's seed

    def __post_init__(self) -> None:
        if self.rounds < 0:
            raise ValueError(f"rounds must be >= 0, got {self.rounds}")
        if not 0.0 < self.rate < 1.0:
            raise ValueError(f"rate must be in (0, 1), got {self.rate}")
        if self.rewind_step < 0:
            raise ValueError(f"rewind step must be >= 0, got {self.rewind_step}")
        if self.epochs <= 0:
            raise ValueError(f"epochs must be positive, got {self.epochs}")
        if self.start not in ("student", "init"):
            raise ValueError(f"start must be student or init, got {self.start!r}")
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")

    def target_sparsity(self, round_index: int) -> float:
        return 1.0 - (1.0 - self.rate) ** round_index


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


def round_train_settings(
    config: AttackConfig, transfer: TransferSet, settings: PruneSettings
) -> TrainSettings:
    """The run's training settings for ``settings.epochs`` passes over the whole transfer set."""
    batches = batches_per_epoch(len(transfer), config.train.batch_size)
    base = point_settings(config, math.ceil(settings.epochs * batches))
    return replace(
        base,
        lr=settings.lr or base.lr,
        seed=config.seed if settings.seed is None else settings.seed,
    )


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
    rounds from ``start`` (trained in place). Returns the rows and the last round's student."""
    loss = build_run_loss(config, OutputMode(transfer.manifest.output))
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
            masks = global_magnitude_masks(model, masks, settings.rate)
            rewind(model, outcome.rewind_state, masks)
        began = time.perf_counter()
        snapshot = StepSnapshot(model, settings.rewind_step) if index == 0 else None
        with snapshot or nullcontext():
            result = train_student(
                model,
                transfer,
                loss,
                train,
                desc=f"round {index} train",
                show_progress=show_progress,
            )
        if snapshot is not None:
            outcome.rewind_state = snapshot.state
            outcome.rewind_taken_at = snapshot.taken_at
        row = _measure(model, eval_set, index, result.steps, time.perf_counter() - began)
        record(row)
        bar.update(1)
        bar.set_postfix(sparsity=f"{row.sparsity:.3f}", top1=f"{row.fidelity.top1_agreement:.3f}")
    bar.close()
    make_permanent(model)
    outcome.model = model
    outcome.masks = masks
    return outcome
