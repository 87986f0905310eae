"""Cross-entropy against the victim's top-1 label: ``HardLabelCrossEntropy``, registered as
``hard_ce``."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .loss_base import DistillLoss, check_logits
from .loss_registry import register_loss
from .loss_targets import DistillTargets, Need

__all__ = ["HardLabelCrossEntropy"]


@register_loss("hard_ce")
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
