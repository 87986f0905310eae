"""What the victim told us about a batch, as tensors: :class:`DistillTargets`.

``targets_from_results`` turns the victim's JSON answers (one ``ClipResult`` dict per clip) into a
``DistillTargets``; ``complete_topk`` turns a top-k answer into a full teacher distribution;
``Need`` names what a loss needs from the victim and ``MODE_PROVIDES`` what each output mode gives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import torch
from torch import Tensor

from shared.schemas import OutputMode

__all__ = [
    "MODE_PROVIDES",
    "UNKNOWN_LABEL",
    "DistillTargets",
    "Need",
    "complete_topk",
    "require",
    "targets_from_results",
]

UNKNOWN_LABEL = -1


class Need(StrEnum):
    """What a loss needs from the victim's answer."""

    SOFT = "soft"
    TOPK = "topk"
    LABEL = "label"

    @property
    def description(self) -> str:
        return _NEED_DESCRIPTION[self]


_NEED_DESCRIPTION = {
    Need.SOFT: "the victim's full probabilities or logits",
    Need.TOPK: "the victim's top-k classes and scores",
    Need.LABEL: "the victim's top-1 label",
}

MODE_PROVIDES: dict[OutputMode, frozenset[Need]] = {
    OutputMode.LOGITS: frozenset({Need.SOFT, Need.LABEL}),
    OutputMode.PROBS: frozenset({Need.SOFT, Need.LABEL}),
    OutputMode.TOPK: frozenset({Need.TOPK, Need.LABEL}),
    OutputMode.LABEL: frozenset({Need.LABEL}),
}


@dataclass(frozen=True, kw_only=True)
class DistillTargets:
    """The victim's answers for one batch of B clips over C classes.

    Which fields are set depends on the key's output mode; ``label`` is always known.

    * ``probs``: (B, C) victim probabilities (softmax of ``logits`` in logits mode), rows sum to 1.
    * ``logits``: (B, C) victim logits, logits mode only.
    * ``topk_index``: (B, k) int64 top-k class indices, best first; ``topk_score``: (B, k) their
      probabilities. Set together or not at all.
    * ``label``: (B,) int64 victim top-1 class.
    * ``true_label``: (B,) int64 ground truth, ``-1`` where unknown (grey-box labelled clips).
    """

    probs: Tensor | None = None
    logits: Tensor | None = None
    topk_index: Tensor | None = None
    topk_score: Tensor | None = None
    label: Tensor
    true_label: Tensor | None = None

    def __post_init__(self) -> None:
        if self.label.dim() != 1:
            raise ValueError(f"label must be 1-D (B,), got shape {tuple(self.label.shape)}")
        batch = self.label.shape[0]
        classes: set[int] = set()
        for name in ("probs", "logits", "topk_index", "topk_score"):
            value: Tensor | None = getattr(self, name)
            if value is None:
                continue
            if value.dim() != 2 or value.shape[0] != batch:
                raise ValueError(f"{name} must have shape (B={batch}, _), got {tuple(value.shape)}")
            if name in ("probs", "logits"):
                classes.add(value.shape[1])
        if len(classes) > 1:
            raise ValueError(f"probs and logits disagree on the number of classes: {classes}")
        if (self.topk_index is None) != (self.topk_score is None):
            raise ValueError("topk_index and topk_score must be given together")
        if (
            self.topk_index is not None
            and self.topk_score is not None
            and self.topk_index.shape != self.topk_score.shape
        ):
            raise ValueError(
                f"topk_index {tuple(self.topk_index.shape)} and topk_score "
                f"{tuple(self.topk_score.shape)} differ in shape"
            )
        if self.true_label is not None and self.true_label.shape != (batch,):
            raise ValueError(
                f"true_label must have shape ({batch},), got {tuple(self.true_label.shape)}"
            )

    @property
    def batch_size(self) -> int:
        return int(self.label.shape[0])

    @property
    def num_classes(self) -> int | None:
        """C when full probabilities or logits are known, else None."""
        full = self.logits if self.logits is not None else self.probs
        return None if full is None else int(full.shape[1])

    @property
    def has_soft(self) -> bool:
        """Whether the full teacher distribution is known (probs or logits)."""
        return self.probs is not None or self.logits is not None

    @property
    def has_topk(self) -> bool:
        return self.topk_index is not None

    @property
    def known_true(self) -> Tensor:
        """(B,) bool mask of clips whose true label is known."""
        if self.true_label is None:
            return torch.zeros_like(self.label, dtype=torch.bool)
        return self.true_label >= 0

    def _map(self, fn: Callable[[Tensor], Tensor]) -> DistillTargets:
        """These targets with ``fn`` applied to every tensor that is set."""
        fields = ("probs", "logits", "topk_index", "topk_score", "true_label")
        changed = {name: fn(t) for name in fields if (t := getattr(self, name)) is not None}
        return replace(self, label=fn(self.label), **changed)

    def take(self, index: Tensor) -> DistillTargets:
        """The targets of clips ``index`` (a (B',) int64 tensor), in that order."""
        return self._map(lambda t: t[index.to(t.device)])

    def to(self, device: torch.device | str) -> DistillTargets:
        """The same targets on ``device`` (no copy for tensors already there)."""
        return self._map(lambda t: t.to(device))


def require(targets: DistillTargets, need: Need, who: str) -> None:
    """Raise ValueError (one line) when ``targets`` lack what ``who`` needs."""
    have = {
        Need.SOFT: targets.has_soft,
        Need.TOPK: targets.has_topk,
        Need.LABEL: True,
    }[need]
    if not have:
        raise ValueError(f"{who} needs {need.description}, which these targets do not have")


def complete_topk(topk_index: Tensor, topk_score: Tensor, num_classes: int) -> Tensor:
    """The full (B, C) teacher distribution implied by a top-k answer.

    With K the returned classes and s their scores (negative scores clamped to 0):

    * if sum(s) > 1 (rounding), s is rescaled to sum to 1;
    * the returned classes keep their (rescaled) scores: q_j = s_j for j in K;
    * the leftover mass r = max(0, 1 - sum(s)) is spread uniformly over the C - k other
      classes: q_j = r / (C - k) for j not in K;
    * if k == C there is no other class, and s is renormalised to sum to 1.

    Every row sums to 1. Why uniform, and what else one could do, is in ``TopKAwareLoss``.
    """
    if topk_index.shape != topk_score.shape or topk_index.dim() != 2:
        raise ValueError(
            f"topk_index and topk_score must both be (B, k), got {tuple(topk_index.shape)} "
            f"and {tuple(topk_score.shape)}"
        )
    k = topk_index.shape[1]
    if not 0 < k <= num_classes:
        raise ValueError(f"top-k needs 0 < k <= num_classes={num_classes}, got k={k}")
    score = topk_score if topk_score.is_floating_point() else topk_score.float()
    score = score.clamp_min(0.0)
    total = score.sum(dim=1, keepdim=True)
    tail = num_classes - k
    if tail == 0:
        # Nowhere to put leftover mass: renormalise (a zero row becomes uniform).
        score = torch.where(total > 0, score / total.clamp_min(1e-12), 1.0 / k)
        leftover_each = torch.zeros_like(total)
    else:
        score = score / total.clamp_min(1.0)
        leftover = (1.0 - score.sum(dim=1, keepdim=True)).clamp_min(0.0)
        leftover_each = leftover / tail
    dist = leftover_each.expand(-1, num_classes).clone()
    return dist.scatter(1, topk_index.long(), score)


def _floats(result: Mapping[str, Any], key: str, num_classes: int, position: int) -> list[float]:
    values = result.get(key)
    if values is None:
        raise ValueError(f"result {position} has no {key!r}, which this output mode must return")
    if len(values) != num_classes:
        raise ValueError(
            f"result {position} has {len(values)} {key}, expected num_classes={num_classes}"
        )
    return [float(v) for v in values]


def _topk(
    results: Sequence[Mapping[str, Any]], num_classes: int, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    indices: list[list[int]] = []
    scores: list[list[float]] = []
    for position, result in enumerate(results):
        entries = result.get("topk")
        if not entries:
            raise ValueError(f"result {position} has no 'topk', which topk mode must return")
        # Best first, whatever order the wire used.
        ordered = sorted(entries, key=lambda e: float(e["score"]), reverse=True)
        idx = [int(e["index"]) for e in ordered]
        if len(set(idx)) != len(idx) or not all(0 <= i < num_classes for i in idx):
            raise ValueError(
                f"result {position} top-k indices {idx} are repeated or outside [0, {num_classes})"
            )
        if indices and len(idx) != len(indices[0]):
            raise ValueError(
                f"result {position} has k={len(idx)}, but result 0 has k={len(indices[0])}"
            )
        indices.append(idx)
        scores.append([float(e["score"]) for e in ordered])
    return (
        torch.tensor(indices, dtype=torch.int64),
        torch.tensor(scores, dtype=dtype),
    )


def targets_from_results(
    results: Sequence[Mapping[str, Any]],
    num_classes: int,
    mode: OutputMode | str,
    true_labels: Sequence[int | None] | None = None,
    *,
    dtype: torch.dtype = torch.float32,
) -> DistillTargets:
    """Parse the victim's per-clip results (``ClipResult`` dicts) into ``DistillTargets``.

    ``label`` is each result's ``index`` (the victim's top-1). By ``mode``: ``logits`` fills
    ``logits`` and ``probs = softmax(logits)``; ``probs`` fills ``probs`` (negatives clamped to 0,
    rows renormalised to sum to 1); ``topk`` fills ``topk_index``/``topk_score`` sorted best first;
    ``label`` fills nothing more. ``true_labels`` (None or negative where unknown) becomes
    ``true_label`` with -1 for unknown. Raises ValueError on a result that lacks what its mode must
    return, or on inconsistent lengths.
    """
    mode = OutputMode(mode)
    if not results:
        raise ValueError("no results to parse")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    label_list = [int(r["index"]) for r in results]
    if not all(0 <= i < num_classes for i in label_list):
        raise ValueError(f"victim label index outside [0, {num_classes}): {label_list}")
    label = torch.tensor(label_list, dtype=torch.int64)

    true_label: Tensor | None = None
    if true_labels is not None:
        if len(true_labels) != len(results):
            raise ValueError(f"{len(true_labels)} true labels for {len(results)} results")
        known = [UNKNOWN_LABEL if t is None or t < 0 else int(t) for t in true_labels]
        if any(t >= num_classes for t in known):
            raise ValueError(f"true label outside [0, {num_classes}): {known}")
        true_label = torch.tensor(known, dtype=torch.int64)

    probs: Tensor | None = None
    logits: Tensor | None = None
    topk_index: Tensor | None = None
    topk_score: Tensor | None = None
    if mode is OutputMode.LOGITS:
        rows = [_floats(r, "logits", num_classes, i) for i, r in enumerate(results)]
        logits = torch.tensor(rows, dtype=dtype)
        probs = torch.softmax(logits, dim=1)
    elif mode is OutputMode.PROBS:
        rows = [_floats(r, "probs", num_classes, i) for i, r in enumerate(results)]
        raw = torch.tensor(rows, dtype=dtype).clamp_min(0.0)
        total = raw.sum(dim=1, keepdim=True)
        if bool((total <= 0).any()):
            raise ValueError("a probs row has no positive mass")
        probs = raw / total
    elif mode is OutputMode.TOPK:
        topk_index, topk_score = _topk(results, num_classes, dtype)

    return DistillTargets(
        probs=probs,
        logits=logits,
        topk_index=topk_index,
        topk_score=topk_score,
        label=label,
        true_label=true_label,
    )
