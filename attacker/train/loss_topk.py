"""Distillation from top-k answers: ``TopKAwareLoss`` and its ranking term ``TopKRankTerm``."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .loss_base import DistillLoss, check_logits, kl_rows
from .loss_registry import register_loss
from .loss_targets import DistillTargets, Need, complete_topk, require

__all__ = ["TopKAwareLoss", "TopKRankTerm"]

Tail = Literal["uniform", "bucket"]
Divergence = Literal["kl", "ce"]


class TopKRankTerm(nn.Module):
    """Hinge loss asking the student's logits to rank the teacher's top-k in the teacher's order.

    With ``j_1..j_k`` the teacher's top-k (best first), ``m`` the margin and ``K`` that set:

    * order: ``max(0, m - (s_{j_a} - s_{j_{a+1}}))`` for ``a = 1..k-1``, only where the teacher's
      scores strictly decrease (tied scores ask for no order);
    * set: ``max(0, m - (s_{j_k} - max_{j not in K} s_j))`` when ``k < C``.

    Returns the mean over all active constraints of the batch (0 when there are none).
    """

    def __init__(self, margin: float = 0.5) -> None:
        super().__init__()
        if not margin >= 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.margin = float(margin)

    def forward(self, student_logits: Tensor, topk_index: Tensor, topk_score: Tensor) -> Tensor:
        index = topk_index.long()
        ranked = student_logits.gather(1, index)  # B k
        hinges: list[Tensor] = []
        counts: list[Tensor] = []
        if index.shape[1] > 1:
            ordered = (topk_score[:, :-1] > topk_score[:, 1:]).to(ranked.dtype)  # B k-1
            gap = ranked[:, :-1] - ranked[:, 1:]
            hinges.append((F.relu(self.margin - gap) * ordered).sum())
            counts.append(ordered.sum())
        if index.shape[1] < student_logits.shape[1]:
            in_topk = torch.zeros_like(student_logits, dtype=torch.bool).scatter(1, index, True)
            best_other = student_logits.masked_fill(in_topk, float("-inf")).amax(dim=1)  # B
            hinges.append(F.relu(self.margin - (ranked[:, -1] - best_other)).sum())
            counts.append(ranked.new_tensor(float(index.shape[0])))
        if not hinges:
            return 0.0 * student_logits.sum()
        return torch.stack(hinges).sum() / torch.stack(counts).sum().clamp_min(1.0)

    def __call__(self, student_logits: Tensor, topk_index: Tensor, topk_score: Tensor) -> Tensor:
        out: Tensor = super().__call__(student_logits, topk_index, topk_score)
        return out

    def extra_repr(self) -> str:
        return f"margin={self.margin}"


@register_loss("topk")
class TopKAwareLoss(DistillLoss):
    """Distillation from a top-k answer: the teacher is known only on the k returned classes.

    The teacher distribution is completed by ``complete_topk``: the returned classes keep their
    scores (rescaled to sum to 1 if rounding pushed them over), and the leftover mass
    ``r = max(0, 1 - sum of top-k scores)`` is spread uniformly over the other ``C - k`` classes;
    when ``k == C`` the scores are renormalised and this is plain soft distillation.

    ``tail="uniform"`` (default): with ``q`` the completed teacher,
    ``loss = T^2 * mean_i KL(q_i^T || softmax_T(s_i))`` (``divergence="kl"``, 0 at a match) or
    ``T^2 * mean_i -sum_j q^T_ij log softmax_T(s_i)_j`` (``divergence="ce"``), with
    ``q^T = q^(1/T)`` renormalised.

    ``tail="bucket"``: only what was observed is matched. The other classes are merged into one
    bucket and the (k+1)-way distributions are compared:
    ``KL([q_K, r] || [softmax(s)_K, sum_{j not in K} softmax(s)_j])``; how the student spreads
    mass inside the bucket is free. Needs ``temperature == 1`` (tempering does not commute with
    merging).

    Why uniform by default, and the alternatives:

    * uniform tail (default): the maximum-entropy completion consistent with the answer; it
      claims nothing about unseen classes beyond their total mass and keeps every target
      probability positive, so log-targets stay finite at any temperature. It is wrong in detail
      (the victim's tail is not flat) but pulls the student's tail toward the right total.
    * renormalise the top-k and give the tail zero: claims the victim is certain the other
      classes are impossible; the student is pushed to drive their logits to -inf forever
      (unbounded logits, over-confidence). Not offered.
    * bucket (offered): exact about what was seen, silent about the rest; weaker signal on
      the tail ordering, which the victim never revealed anyway.
    * cap the tail at the k-th score (a tail class cannot beat a returned one): only matters
      when ``r / (C - k)`` exceeds the k-th score, i.e. scores rounded to few digits.

    ``rank_weight > 0`` adds ``rank_weight * TopKRankTerm(margin)`` on the raw student logits.
    """

    need = Need.TOPK

    def __init__(
        self,
        temperature: float = 1.0,
        *,
        tail: Tail = "uniform",
        divergence: Divergence = "kl",
        rank_weight: float = 0.0,
        margin: float = 0.5,
    ) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if tail not in ("uniform", "bucket"):
            raise ValueError(f"tail must be 'uniform' or 'bucket', got {tail!r}")
        if divergence not in ("kl", "ce"):
            raise ValueError(f"divergence must be 'kl' or 'ce', got {divergence!r}")
        if tail == "bucket" and temperature != 1.0:
            raise ValueError("tail='bucket' needs temperature=1.0")
        if not rank_weight >= 0:
            raise ValueError(f"rank_weight must be >= 0, got {rank_weight}")
        self.temperature = float(temperature)
        self.tail: Tail = tail
        self.divergence: Divergence = divergence
        self.rank_weight = float(rank_weight)
        self.rank = TopKRankTerm(margin)

    def forward(self, student_logits: Tensor, targets: DistillTargets) -> Tensor:
        return torch.stack(list(self.terms(student_logits, targets).values())).sum()

    def terms(self, student_logits: Tensor, targets: DistillTargets) -> dict[str, Tensor]:
        """``{"distill": match}``, or with ``rank_weight > 0`` ``{"topk_match": match,
        "topk_rank": rank_weight * rank}``."""
        require(targets, self.need, type(self).__name__)
        assert targets.topk_index is not None and targets.topk_score is not None
        s = check_logits(student_logits, targets)
        index = targets.topk_index.long()
        score = targets.topk_score.detach().to(s.dtype)
        completed = complete_topk(index, score, s.shape[1])
        if self.tail == "uniform":
            match = self._uniform(s, completed)
        else:
            match = self._bucket(s, completed, index)
        if self.rank_weight == 0:
            return {"distill": match}
        return {"topk_match": match, "topk_rank": self.rank_weight * self.rank(s, index, score)}

    def _uniform(self, s: Tensor, completed: Tensor) -> Tensor:
        t = self.temperature
        teacher = F.log_softmax(torch.log(completed) / t, dim=1).exp()
        student = F.log_softmax(s / t, dim=1)
        if self.divergence == "kl":
            rows = kl_rows(teacher, student)
        else:
            rows = -(teacher * student).sum(dim=1)
        return rows.mean() * (t * t)

    def _bucket(self, s: Tensor, completed: Tensor, index: Tensor) -> Tensor:
        teacher_k = completed.gather(1, index)  # B k
        student_all = F.log_softmax(s, dim=1)
        student_k = student_all.gather(1, index)  # B k
        if index.shape[1] < s.shape[1]:
            in_topk = torch.zeros_like(s, dtype=torch.bool).scatter(1, index, True)
            student_rest = torch.logsumexp(student_all.masked_fill(in_topk, float("-inf")), dim=1)
            rest = (1.0 - teacher_k.sum(dim=1)).clamp_min(0.0)
            teacher_k = torch.cat([teacher_k, rest[:, None]], dim=1)
            student_k = torch.cat([student_k, student_rest[:, None]], dim=1)
        if self.divergence == "kl":
            rows = kl_rows(teacher_k, student_k)
        else:
            rows = -(teacher_k * student_k).sum(dim=1)
        return rows.mean()

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, tail={self.tail!r}, divergence={self.divergence!r}, "
            f"rank_weight={self.rank_weight}"
        )
