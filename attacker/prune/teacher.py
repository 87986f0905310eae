"""Self-distillation while pruning: the run's dense student as a second teacher.

Each pruning round retrains on the victim's answers; with a teacher weight ``w > 0`` it also
learns the dense student's own outputs on the same (possibly mixed-up) clips of each batch:

    total = run_loss(s, victim targets) + w * T^2 * mean_i KL(softmax_T(d_i) || softmax_T(s_i))

with ``s`` the pruned student's logits, ``d`` the dense student's (eval mode, no gradient) and
``T`` the run's distillation temperature (1 for a loss that has none). The dense student is the
attacker's own model, so its outputs cost no query; what they add is the dense clone's view of
the victim between the victim's few thousand answers, which pruning would otherwise forget.

:class:`TeacherTerm` adds the term without touching the training loop: a forward pre-hook
on the student (:class:`attacker.prune.hooks.TrainingForwardHook`) runs the teacher on the
batch the student is about to see (training mode only), and :meth:`TeacherTerm.loss` wraps the
run's loss to add the term to what it returns.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacker.prune.hooks import TrainingForwardHook
from attacker.train.losses import DistillTargets, LossFn, LossParts

__all__ = ["TeacherTerm", "distillation_temperature"]


def distillation_temperature(loss: nn.Module) -> float:
    """The run's distillation temperature (``loss.distill.temperature``), 1.0 if it has none."""
    distill = getattr(loss, "distill", None)
    return float(getattr(distill, "temperature", 1.0))


class TeacherTerm(TrainingForwardHook):
    """Context manager: while open, ``loss(base)`` adds ``weight`` times the KL toward the
    teacher's outputs on each training batch the student sees."""

    def __init__(
        self, student: nn.Module, teacher: nn.Module, *, weight: float, temperature: float
    ) -> None:
        if not weight > 0:
            raise ValueError(f"teacher weight must be > 0, got {weight}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        super().__init__(student)
        self.teacher = teacher.eval()
        for parameter in self.teacher.parameters():
            parameter.requires_grad_(False)
        self.weight = weight
        self.temperature = temperature
        self._logits: Tensor | None = None

    def on_training_forward(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        with torch.no_grad():
            self._logits = self.teacher(args[0]).float()

    def on_close(self) -> None:
        self._logits = None

    def kd(self, student_logits: Tensor) -> Tensor:
        """``T^2 * mean_i KL(softmax_T(teacher_i) || softmax_T(student_i))`` for the batch the
        student last saw in training mode."""
        if self._logits is None:
            raise RuntimeError("no teacher outputs: the student made no training forward pass")
        if self._logits.shape != student_logits.shape:
            raise ValueError(
                f"teacher logits {tuple(self._logits.shape)} do not match the student's "
                f"{tuple(student_logits.shape)}"
            )
        t = self.temperature
        target = F.log_softmax(self._logits / t, dim=1)
        student = F.log_softmax(student_logits / t, dim=1)
        kl = F.kl_div(student, target, reduction="batchmean", log_target=True)
        return kl * (t * t)

    def loss(self, base: LossFn) -> LossFn:
        """``base`` plus the teacher term; the term is logged as ``teacher`` (unweighted)."""

        def with_teacher(student_logits: Tensor, targets: DistillTargets) -> LossParts:
            parts = base(student_logits, targets)
            kd = self.kd(student_logits)
            return LossParts(
                total=parts.total + self.weight * kd,
                distill=parts.distill,
                true_label=parts.true_label,
                parts={**parts.parts, "teacher": kd},
            )

        return with_teacher
