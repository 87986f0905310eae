"""Extraction losses: the registry's public face, a YAML spec, and one factory.

``build_loss_from_spec(spec, mode, true_label_weight=w)`` returns an ``ExtractionLoss``:
``loss(student_logits, targets) -> LossParts`` with ``total = distill + true_label`` and every
named part kept apart for logging. ``LossSpec`` is what YAML gives (``train.loss``): ``kl``,
``auto`` (the default for the key's output mode) or ``{name: kl, temperature: 2}``; parameters
are validated against the loss's constructor. Registered names (``loss_registry``; each loss is
one module and one ``@register_loss``):

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

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from torch import Tensor, nn

from shared.schemas import OutputMode

from .loss_base import DistillLoss
from .loss_condi import ConfidenceDistillation
from .loss_hard_ce import HardLabelCrossEntropy
from .loss_kl import KLDistillation
from .loss_registry import (
    LOSSES,
    get_loss_class,
    loss_names,
    loss_parameters,
    register_loss,
    validate_loss_params,
)
from .loss_soft_ce import SoftCrossEntropy
from .loss_targets import (
    MODE_PROVIDES,
    DistillTargets,
    Need,
    complete_topk,
    targets_from_results,
)
from .loss_topk import TopKAwareLoss, TopKRankTerm
from .loss_true_label import TrueLabelTerm

__all__ = [
    "AUTO",
    "LOSSES",
    "ConfidenceDistillation",
    "DistillLoss",
    "DistillTargets",
    "ExtractionLoss",
    "HardLabelCrossEntropy",
    "KLDistillation",
    "LossFn",
    "LossParts",
    "LossSpec",
    "Need",
    "SoftCrossEntropy",
    "TopKAwareLoss",
    "TopKRankTerm",
    "TrueLabelTerm",
    "build_configured_loss",
    "build_loss",
    "build_loss_from_spec",
    "complete_topk",
    "default_loss_for",
    "get_loss_class",
    "loss_names",
    "loss_parameters",
    "register_loss",
    "targets_from_results",
]

AUTO = "auto"
"""The spec name that stands for the default loss of the key's output mode."""

_DEFAULT_FOR_MODE = {
    OutputMode.LOGITS: "kl",
    OutputMode.PROBS: "kl",
    OutputMode.TOPK: "topk",
    OutputMode.LABEL: "hard_ce",
}


def default_loss_for(mode: OutputMode | str) -> str:
    """The loss for a mode: logits/probs -> "kl", topk -> "topk", label -> "hard_ce"."""
    return _DEFAULT_FOR_MODE[OutputMode(mode)]


class LossSpec(BaseModel):
    """A loss as a config names it: ``name`` plus the loss's constructor arguments, flat.

    YAML: ``loss: kl``, ``loss: auto`` or ``loss: {name: kl, temperature: 2}``. Validation checks
    the name against the registry and every other key against the loss class's constructor
    (unknown parameter, wrong type, a value the constructor refuses: a one-line ValueError naming
    it); values are stored coerced (``params``). ``auto`` takes no parameters: which loss it
    means depends on the output mode, known only at build time (``resolve``).
    """

    model_config = ConfigDict(extra="allow")

    name: str = AUTO

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _check_params(self) -> LossSpec:
        params = self.params
        if self.name == AUTO:
            # Which loss `auto` means depends on the output mode; a parameter is kept when at
            # least one loss takes it, and given only to a resolved loss that does.
            known = {p for name in loss_names() for p in loss_parameters(name)}
            unknown = sorted(set(params) - known)
            if unknown:
                raise ValueError(
                    f"loss {AUTO!r}: no loss takes parameter(s) {unknown}; known: {sorted(known)}"
                )
            return self
        coerced = validate_loss_params(self.name, params)
        assert self.__pydantic_extra__ is not None
        self.__pydantic_extra__.update(coerced)
        return self

    @property
    def params(self) -> dict[str, Any]:
        """The loss's constructor arguments (everything but ``name``)."""
        return dict(self.model_extra or {})

    def __str__(self) -> str:
        """``kl``, or ``kl(temperature=2.0)`` with parameters: for logs and reports."""
        params = ", ".join(f"{k}={v!r}" for k, v in sorted(self.params.items()))
        return f"{self.name}({params})" if params else self.name

    def __eq__(self, other: object) -> bool:
        """Specs compare by name and parameters; a spec without parameters also equals its name
        as a string, the way YAML may write it (``LossSpec() == "auto"``)."""
        if isinstance(other, str):
            return self.name == other and not self.params
        return super().__eq__(other)

    @classmethod
    def of(cls, name: str, **params: Any) -> LossSpec:
        """``LossSpec(name=name, **params)``, with a one-line ValueError instead of pydantic's."""
        try:
            return cls.model_validate({**params, "name": name})
        except ValidationError as exc:
            raise ValueError(_one_line(exc)) from None

    def resolve(
        self, mode: OutputMode | str, *, fallback: Mapping[str, Any] | None = None
    ) -> LossSpec:
        """This spec for ``mode``: ``auto`` replaced by the mode's default loss, and each
        ``fallback`` parameter added where the loss takes it and the spec does not set it."""
        name = default_loss_for(mode) if self.name == AUTO else self.name
        accepted = loss_parameters(name)
        params = {k: v for k, v in (fallback or {}).items() if k in accepted}
        params.update({k: v for k, v in self.params.items() if k in accepted})
        return LossSpec.of(name, **params)


def _one_line(exc: ValidationError) -> str:
    first = exc.errors()[0]
    return str(first["msg"]).removeprefix("Value error, ")


@dataclass(frozen=True)
class LossParts:
    """One batch's loss: ``total`` to backpropagate; ``distill`` (the victim-driven part),
    ``true_label`` and every named term in ``parts`` to log.

    ``parts`` always holds ``"distill"`` and ``"true_label"``, plus the distillation loss's own
    sub-terms when it has several (e.g. ``"topk_match"`` and ``"topk_rank"``, which sum to
    ``"distill"``).
    """

    total: Tensor
    distill: Tensor
    true_label: Tensor
    parts: Mapping[str, Tensor] = field(default_factory=dict)

    def as_floats(self) -> dict[str, float]:
        """``{"loss": total, "distill": ..., "true_label": ..., <other parts>}`` as floats."""
        out = {
            "loss": float(self.total.detach()),
            "distill": float(self.distill.detach()),
            "true_label": float(self.true_label.detach()),
        }
        for key, value in self.parts.items():
            out.setdefault(key, float(value.detach()))
        return out


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
        terms = self.distill.terms(student_logits, targets)
        distill = terms["distill"] if len(terms) == 1 else torch.stack(list(terms.values())).sum()
        if self.true_label is None:
            true = distill.new_zeros(())
        else:
            true = self.true_label(student_logits, targets).to(distill.dtype)
        parts = {"distill": distill, **terms, "true_label": true}
        return LossParts(total=distill + true, distill=distill, true_label=true, parts=parts)

    def __call__(self, student_logits: Tensor, targets: DistillTargets) -> LossParts:
        out: LossParts = super().__call__(student_logits, targets)
        return out


def build_loss_from_spec(
    spec: LossSpec, mode: OutputMode | str, *, true_label_weight: float
) -> ExtractionLoss:
    """Build the loss ``spec`` names for a key answering in ``mode`` (``auto``: the mode's
    default); ``true_label_weight > 0`` adds ``TrueLabelTerm``.

    Raises ValueError (one line) for a loss that needs something ``mode`` does not return (e.g.
    ``kl`` on a label-only key) or a negative weight.
    """
    mode = OutputMode(mode)
    spec = spec.resolve(mode)
    cls = get_loss_class(spec.name)
    if cls.need not in MODE_PROVIDES[mode]:
        raise ValueError(
            f"loss {spec.name!r} needs {cls.need.description}, which output mode "
            f"{mode.value!r} does not return; use {default_loss_for(mode)!r}"
        )
    if not true_label_weight >= 0:
        raise ValueError(f"true_label_weight must be >= 0, got {true_label_weight}")
    true_term = TrueLabelTerm(true_label_weight) if true_label_weight > 0 else None
    return ExtractionLoss(cls(**spec.params), true_term, name=spec.name)


def build_loss(
    name: str, mode: OutputMode | str, *, true_label_weight: float = 0.0, **params: Any
) -> ExtractionLoss:
    """``build_loss_from_spec(LossSpec.of(name, **params), mode, ...)``: ValueError (one line)
    for an unknown name or parameter, a bad value, or a loss ``mode`` cannot feed."""
    spec = LossSpec.of(name, **params)
    return build_loss_from_spec(spec, mode, true_label_weight=true_label_weight)


def build_configured_loss(
    name: str | LossSpec,
    mode: OutputMode | str,
    *,
    temperature: float | None = None,
    true_label_weight: float,
) -> ExtractionLoss:
    """``build_loss_from_spec`` with ``temperature`` as a fallback: passed only to a loss that
    takes one and whose spec sets none (hard-label cross-entropy, for one, has none). Kept for
    callers of the old ``train.temperature`` shortcut."""
    spec = name if isinstance(name, LossSpec) else LossSpec.of(name)
    fallback = {} if temperature is None else {"temperature": temperature}
    return build_loss_from_spec(
        spec.resolve(mode, fallback=fallback), mode, true_label_weight=true_label_weight
    )
