"""Mixup of queried clips (Zhang et al. 2018), for distillation on a fixed transfer set.

Each training batch is replaced by convex combinations of its clips with a shuffled copy of
itself, ``x' = lam * x + (1 - lam) * x[perm]`` with ``lam ~ Beta(alpha, alpha)``, and the loss is
the same combination of the loss against each clip's own answers,
``lam * loss(s(x'), t) + (1 - lam) * loss(s(x'), t[perm])``. For KL or cross-entropy on soft
targets this has the gradient of the loss against the mixed teacher distribution; mixing the
losses instead of the targets works for every loss (top-k, labels, the true-label term).

Why it helps an extraction: the transfer set is small and every answer was paid for, so passes
over it overfit; mixed clips cost nothing and keep the student between the clips it has seen.
The victim's answer on a mixed clip is not the mix of its answers, so this is a regulariser, not
free labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from attacker.train.loss_targets import DistillTargets
from attacker.train.losses import LossFn, LossParts

__all__ = ["MixedBatch", "mix_batch", "mixed_loss"]


@dataclass(frozen=True)
class MixedBatch:
    clips: Tensor  # (B, ...) the mixed clips
    partner: Tensor  # (B,) int64: clip i was mixed with clip partner[i]
    weight: float  # lam: the weight of each clip's own content


def mix_batch(clips: Tensor, alpha: float, *, seed: int, step: int) -> MixedBatch:
    """Mix ``clips`` (B, ...) with a permutation of themselves; deterministic in (seed, step) so
    a resumed run mixes as the first one did."""
    if alpha <= 0:
        raise ValueError(f"mixup alpha must be > 0, got {alpha}")
    rng = np.random.default_rng([seed, step])
    weight = float(rng.beta(alpha, alpha))
    partner = torch.from_numpy(rng.permutation(clips.shape[0])).to(clips.device)
    mixed = clips.mul(weight).add_(clips[partner], alpha=1.0 - weight)
    return MixedBatch(clips=mixed, partner=partner, weight=weight)


def mixed_loss(
    loss_fn: LossFn, student_logits: Tensor, targets: DistillTargets, batch: MixedBatch
) -> LossParts:
    """``lam * loss(logits, targets) + (1 - lam) * loss(logits, targets[partner])``, every logged
    part combined the same way."""
    own = loss_fn(student_logits, targets)
    other = loss_fn(student_logits, targets.take(batch.partner))
    w = batch.weight

    def mix(a: Tensor, b: Tensor) -> Tensor:
        return a * w + b * (1.0 - w)

    return LossParts(
        total=mix(own.total, other.total),
        distill=mix(own.distill, other.distill),
        true_label=mix(own.true_label, other.true_label),
        parts={name: mix(value, other.parts[name]) for name, value in own.parts.items()},
    )
