"""The base of the extraction losses, ``DistillLoss``, and the helpers they share.

Each loss lives in its own module (``loss_kl``, ``loss_soft_ce``, ``loss_hard_ce``, ``loss_topk``,
``loss_condi``) and registers its name with ``@register_loss`` (``loss_registry``).

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
    "check_logits",
    "check_temperature",
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
    key's output mode does not meet. Parameters are constructor arguments (validated from YAML
    against the constructor's signature, see ``loss_registry``). A loss made of several weighted
    terms overrides ``terms`` to name them, so each is logged apart.
    """

    need: ClassVar[Need] = Need.LABEL

    def forward(self, student_logits: Tensor, targets: DistillTargets) -> Tensor:
        raise NotImplementedError

    def terms(self, student_logits: Tensor, targets: DistillTargets) -> dict[str, Tensor]:
        """The loss as named, weighted parts that sum to ``forward``; ``{"distill": loss}`` here."""
        return {"distill": self(student_logits, targets)}

    def __call__(self, student_logits: Tensor, targets: DistillTargets) -> Tensor:
        out: Tensor = super().__call__(student_logits, targets)
        return out


def check_temperature(temperature: float) -> float:
    """``temperature`` as a float; ValueError unless it is > 0."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return float(temperature)
