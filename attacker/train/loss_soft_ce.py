"""Cross-entropy against the victim's probabilities: ``SoftCrossEntropy``, registered as
``soft_ce``."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .loss_base import DistillLoss, check_logits, teacher_log_probs
from .loss_registry import register_loss
from .loss_targets import DistillTargets, Need, require

__all__ = ["SoftCrossEntropy"]


@register_loss("soft_ce")
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
