"""The grey-box term added on top of any distillation loss: ``TrueLabelTerm``."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .loss_base import check_logits
from .loss_targets import DistillTargets

__all__ = ["TrueLabelTerm"]


class TrueLabelTerm(nn.Module):
    """Weighted cross-entropy on ground-truth labels, where known (grey-box clips), per clip.

    ``w * (1 / B) sum_{i in L} CE(s_i, y_i)`` over ``L = {i : y_i >= 0}`` in a batch of B clips:
    the sum runs over the labelled clips but the mean over the whole batch, so each labelled clip
    weighs ``w`` times a distilled clip (whose term is also a mean over B), however few of them a
    batch holds. (Averaging over ``|L|`` instead gave each labelled clip ``B / |L|`` times that
    weight: 13-64x with 1-5 labelled clips in a batch of 64.) Exactly 0, with a zero, finite
    gradient, when ``L`` is empty or ``true_label`` is None.
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
        return self.weight * (per_clip * mask).sum() / max(1, s.shape[0])

    def __call__(self, student_logits: Tensor, targets: DistillTargets) -> Tensor:
        out: Tensor = super().__call__(student_logits, targets)
        return out

    def extra_repr(self) -> str:
        return f"weight={self.weight}"
