"""Hinton distillation with a temperature: ``KLDistillation``, registered as ``kl``."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .loss_base import DistillLoss, check_logits, check_temperature, kl_rows, teacher_log_probs
from .loss_registry import register_loss
from .loss_targets import DistillTargets, Need, require

__all__ = ["KLDistillation"]


@register_loss("kl")
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
        self.temperature = check_temperature(temperature)

    def forward(self, student_logits: Tensor, targets: DistillTargets) -> Tensor:
        require(targets, self.need, type(self).__name__)
        s = check_logits(student_logits, targets)
        t = self.temperature
        teacher = teacher_log_probs(targets, t, dtype=s.dtype).exp()
        student = F.log_softmax(s / t, dim=1)
        return kl_rows(teacher, student).mean() * (t * t)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
