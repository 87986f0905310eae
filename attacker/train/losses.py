"""Extraction losses: one factory, ``build_loss(name, mode, **params)``, and the public API.

``build_loss`` returns an ``ExtractionLoss``: ``loss(student_logits, targets) -> LossParts`` with
``total = distill + true_label`` (the parts kept apart for logging). Names:

==========  =========================  ===================================================
name        needs from the victim      term
==========  =========================  ===================================================
kl          probabilities or logits    ``KLDistillation(temperature)``
soft_ce     probabilities or logits    ``SoftCrossEntropy()``
hard_ce     top-1 label                ``HardLabelCrossEntropy(label_smoothing)``
topk        top-k classes and scores   ``TopKAwareLoss(temperature, tail, divergence, ...)``
condi_sr    probabilities or logits    ``ConfidenceDistillation(temperature, alpha, ...)``
==========  =========================  ===================================================

``true_label_weight > 0`` adds ``TrueLabelTerm(true_label_weight)`` on top of any of them.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Protocol

from torch import Tensor, nn

from shared.schemas import OutputMode

from .loss_condi import ConfidenceDistillation
from .loss_targets import (
    MODE_PROVIDES,
    DistillTargets,
    Need,
    complete_topk,
    targets_from_results,
)
from .loss_terms import (
    DistillLoss,
    HardLabelCrossEntropy,
    KLDistillation,
    SoftCrossEntropy,
    TrueLabelTerm,
)
from .loss_topk import TopKAwareLoss, TopKRankTerm

__all__ = [
    "LOSSES",
    "ConfidenceDistillation",
    "DistillLoss",
    "DistillTargets",
    "ExtractionLoss",
    "HardLabelCrossEntropy",
    "KLDistillation",
    "LossFn",
    "LossParts",
    "Need",
    "SoftCrossEntropy",
    "TopKAwareLoss",
    "TopKRankTerm",
    "TrueLabelTerm",
    "build_configured_loss",
    "build_loss",
    "complete_topk",
    "default_loss_for",
    "targets_from_results",
]

LOSSES: dict[str, type[DistillLoss]] = {
    "kl": KLDistillation,
    "soft_ce": SoftCrossEntropy,
    "hard_ce": HardLabelCrossEntropy,
    "topk": TopKAwareLoss,
    "condi_sr": ConfidenceDistillation,
}

_DEFAULT_FOR_MODE = {
    OutputMode.LOGITS: "kl",
    OutputMode.PROBS: "kl",
    OutputMode.TOPK: "topk",
    OutputMode.LABEL: "hard_ce",
}


@dataclass(frozen=True)
class LossParts:
    """One batch's loss: ``total`` to backpropagate, ``distill`` and ``true_label`` to log."""

    total: Tensor
    distill: Tensor
    true_label: Tensor

    def as_floats(self) -> dict[str, float]:
        """``{"loss", "distill", "true_label"}`` as Python floats, for logging."""
        return {
            "loss": float(self.total.detach()),
            "distill": float(self.distill.detach()),
            "true_label": float(self.true_label.detach()),
        }


class LossFn(Protocol):
    """``loss(student_logits (B, C), targets) -> LossParts``."""

    def __call__(self, student_logits: Tensor, targets: DistillTargets) -> LossParts: ...


class ExtractionLoss(nn.Module):
    """A distillation term plus an optional true-label term; satisfies ``LossFn``.

    ``total = distill(student_logits, targets) + true_label_term(student_logits, targets)``
    (the second is 0 when absent). Targets are moved to the logits' device.
    """

    def __init__(
        self, distill: DistillLoss, true_label: TrueLabelTerm | None = None, *, name: str = ""
    ) -> None:
        super().__init__()
        self.distill = distill
        self.true_label = true_label
        self.name = name or type(distill).__name__

    def forward(self, student_logits: Tensor, targets: DistillTargets) -> LossParts:
        targets = targets.to(student_logits.device)
        distill = self.distill(student_logits, targets)
        if self.true_label is None:
            true = distill.new_zeros(())
        else:
            true = self.true_label(student_logits, targets).to(distill.dtype)
        return LossParts(total=distill + true, distill=distill, true_label=true)

    def __call__(self, student_logits: Tensor, targets: DistillTargets) -> LossParts:
        out: LossParts = super().__call__(student_logits, targets)
        return out


def default_loss_for(mode: OutputMode | str) -> str:
    """The loss for a mode: logits/probs -> "kl", topk -> "topk", label -> "hard_ce"."""
    return _DEFAULT_FOR_MODE[OutputMode(mode)]


def _accepted_params(cls: type[DistillLoss]) -> set[str]:
    params = inspect.signature(cls.__init__).parameters.values()
    return {
        p.name
        for p in params
        if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def build_loss(
    name: str, mode: OutputMode | str, *, true_label_weight: float = 0.0, **params: Any
) -> ExtractionLoss:
    """Build loss ``name`` for a key answering in ``mode``.

    ``params`` go to the term's constructor (see ``LOSSES``); ``true_label_weight > 0`` adds
    ``TrueLabelTerm``. Raises ValueError for an unknown name, an unknown parameter, or a loss that
    needs something ``mode`` does not return (e.g. ``kl`` on a label-only key).
    """
    mode = OutputMode(mode)
    cls = LOSSES.get(name)
    if cls is None:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    if cls.need not in MODE_PROVIDES[mode]:
        raise ValueError(
            f"loss {name!r} needs {cls.need.description}, which output mode {mode.value!r} "
            f"does not return; use {default_loss_for(mode)!r}"
        )
    unknown = set(params) - _accepted_params(cls)
    if unknown:
        raise ValueError(
            f"loss {name!r} has no parameter(s) {sorted(unknown)}; "
            f"it takes {sorted(_accepted_params(cls))}"
        )
    if not true_label_weight >= 0:
        raise ValueError(f"true_label_weight must be >= 0, got {true_label_weight}")
    true_term = TrueLabelTerm(true_label_weight) if true_label_weight > 0 else None
    return ExtractionLoss(cls(**params), true_term, name=name)


def build_configured_loss(
    name: str, mode: OutputMode | str, *, temperature: float, true_label_weight: float
) -> ExtractionLoss:
    """``build_loss`` from a run's train settings: the temperature goes only to the losses that
    take one (hard-label cross-entropy, for one, has none)."""
    cls = LOSSES.get(name)
    params = {"temperature": temperature} if cls and "temperature" in _accepted_params(cls) else {}
    return build_loss(name, mode, true_label_weight=true_label_weight, **params)
