"""Small loss modules for distilling a victim into a student.

Notation, per clip i of a batch of B over C classes: ``s_i`` the student's logits, ``z_i`` the
victim's logits (when known), ``p_i`` the victim's probabilities, ``T`` a temperature,
``softmax_T(x) = softmax(x / T)``. Every loss returns a scalar: the mean over the B clips.

All log-probabilities come from ``log_softmax``; a teacher probability of exactly 0 contributes 0
(never ``0 * log 0 = NaN``).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .loss_targets import DistillTargets, Need, require

__all__ = [
    "DistillLoss",
    "HardLabelCrossEntropy",
    "KLDistillation",
    "SoftCrossEntropy",
    "TrueLabelTerm",
    "check_logits",
    "kl_rows",
    "teacher_log_probs",
]


def _as_float(student_logits: Tensor) -> Tensor:
    """Half-precision logits are upcast; float32 and float64 are kept."""
    if student_logits.dtype in (torch.float32, torch.float64):
        return student_logits
    return student_logits.float()


def check_logits(student_logits: Tensor, targets: DistillTargets) -> Tensor:
    """Validate (B, C) student logits against ``targets`` and return them as float."""
    if student_logits.dim() != 2:
        raise ValueError(f"student logits must be (B, C), got {tuple(student_logits.shape)}")
    if student_logits.shape[0] != targets.batch_size:
        raise ValueError(
            f"student logits have batch {student_logits.shape[0]}, targets {targets.batch_size}"
        )
    classes = targets.num_classes
    if classes is not None and student_logits.shape[1] != classes:
        raise ValueError(f"student logits have {student_logits.shape[1]} classes, victim {classes}")
    return _as_float(student_logits)


def teacher_log_probs(
    targets: DistillTargets, temperature: float | Tensor = 1.0, *, dtype: torch.dtype | None = None
) -> Tensor:
    """(B, C) log of the victim's distribution at ``temperature`` (no gradient).

    From logits: ``log_softmax(z / T)``. From probabilities only: ``log_softmax(log(p) / T)``,
    which is the log of ``p^(1/T)`` renormalised; it equals the logits form exactly when
    ``p = softmax(z)``. Zero probabilities stay zero (log = -inf) at every T. ``temperature``
    may be a (B, 1) tensor for per-clip temperatures.
    """
    require(targets, Need.SOFT, "teacher_log_probs")
    if targets.logits is not None:
        base = targets.logits
    else:
        assert targets.probs is not None
        base = torch.log(targets.probs.clamp_min(0.0))
    if dtype is not None:
        base = base.to(dtype)
    return F.log_softmax(base.detach() / temperature, dim=1)


def kl_rows(target: Tensor, student_log_probs: Tensor) -> Tensor:
    """(B,) ``KL(target || student) = sum_j t_j (log t_j - log q_j)``, with ``0 log 0 = 0``."""
    target = target.detach()
    return (torch.xlogy(target, target) - target * student_log_probs).sum(dim=1)


class DistillLoss(nn.Module):
    """Base of the distillation terms: ``loss(student_logits, targets) -> scalar``.

    ``need`` names what the term needs from the victim; the factory refuses a term whose need the
    key's output mode does not meet.
    """

    need: ClassVar[Need] = Need.LABEL

    def forward(self, student_logits: Tensor, targets: DistillTargets) -> Tensor:
        raise NotImplementedError

    def __call__(self, student_logits: Tensor, targets: DistillTargets) -> Tensor:
        out: Tensor = super().__call__(student_logits, targets)
        return out


def _check_temperature(temperature: float) -> float:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return float(temperature)


class KLDistillation(DistillLoss):
    """Hinton distillation: ``T^2 * mean_i KL(t_i || softmax_T(s_i))``.

    The teacher ``t_i = softmax_T(z_i)`` when the victim's logits are known, else
    ``t_i = p_i^(1/T) / sum_j p_ij^(1/T)`` (the same thing when ``p = softmax(z)``). The ``T^2``
    keeps gradient magnitudes comparable across temperatures; as T grows, ``T^2 KL`` tends to
    ``(1 / 2C) sum_j (d_j - mean(d))^2`` with ``d = z - s`` (logit matching).
    """

    need = Need.SOFT

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = _check_temperature(temperature)

    def forward(self, student_logits: Tensor, targets: DistillTargets) -> Tensor:
        require(targets, self.need, type(self).__name__)
        s = check_logits(student_logits, targets)
        t = self.temperature
        teacher = teacher_log_probs(targets, t, dtype=s.dtype).exp()
        student = F.log_softmax(s / t, dim=1)
        return kl_rows(teacher, student).mean() * (t * t)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class SoftCrossEntropy(DistillLoss):
    """``mean_i -sum_j p_ij log softmax(s_i)_j`` against the victim's probabilities.

    Same gradient as ``KLDistillation(1.0)``; its minimum (at ``softmax(s) = p``) is the teacher's
    entropy, not 0.
    """

    need = Need.SOFT

    def forward(self, student_logits: Tensor, targets: DistillTargets) -> Tensor:
        require(targets, self.need, type(self).__name__)
        s = check_logits(student_logits, targets)
        teacher = teacher_log_probs(targets, 1.0, dtype=s.dtype).exp()
        return -(teacher * F.log_softmax(s, dim=1)).sum(dim=1).mean()


class HardLabelCrossEntropy(DistillLoss):
    """Cross-entropy against the victim's top-1 label ``y^v_i`` (what a label-only key returns).

    ``mean_i -sum_j u_ij log softmax(s_i)_j`` with ``u_i = (1 - eps) onehot(y^v_i) + eps / C``.
    """

    need = Need.LABEL

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def forward(self, student_logits: Tensor, targets: DistillTargets) -> Tensor:
        s = check_logits(student_logits, targets)
        return F.cross_entropy(s, targets.label, label_smoothing=self.label_smoothing)

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}"


class TrueLabelTerm(nn.Module):
    """Weighted cross-entropy on ground-truth labels, where known (grey-box clips).

    ``w * (1 / |L|) sum_{i in L} CE(s_i, y_i)`` over ``L = {i : y_i >= 0}``; exactly 0 (with a
    zero, finite gradient) when ``L`` is empty or ``true_label`` is None.
    """

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        if not weight >= 0:
            raise ValueError(f"weight must be >= 0, got {weight}")
        self.weight = float(weight)

    def forward(self, student_logits: Tensor, targets: DistillTargets) -> Tensor:
        s = check_logits(student_logits, targets)
        known = targets.known_true
        labels = known.long() if targets.true_label is None else targets.true_label.clamp_min(0)
        # Unknown rows get a placeholder class and weight 0: finite value, zero gradient.
        per_clip = F.cross_entropy(s, labels, reduction="none")
        mask = known.to(per_clip.dtype)
        mean = (per_clip * mask).sum() / mask.sum().clamp_min(1.0)
        return self.weight * mean

    def __call__(self, student_logits: Tensor, targets: DistillTargets) -> Tensor:
        out: Tensor = super().__call__(student_logits, targets)
        return out

    def extra_repr(self) -> str:
        return f"weight={self.weight}"
