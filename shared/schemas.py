"""Pydantic wire schemas of the victim API, shared by the server and every client."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

__all__ = [
    "AdaptiveMisinformation",
    "BudgetState",
    "ClassifyResponse",
    "ClipResult",
    "DefensePolicy",
    "DetectionAction",
    "DetectionPolicy",
    "DetectionStatus",
    "DetectorName",
    "GaussianNoise",
    "InputSpecWire",
    "KeyCreate",
    "KeyCreated",
    "KeyPublic",
    "ModelInfo",
    "OutputMode",
    "PredictionPoisoning",
    "ReverseSigmoid",
    "TopKEntry",
    "TopUp",
]


class OutputMode(StrEnum):
    """How much of the model's answer a key gets, from most to least informative."""

    LOGITS = "logits"
    PROBS = "probs"
    TOPK = "topk"
    LABEL = "label"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputSpecWire(_Wire):
    frames: int
    height: int
    width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class TopKEntry(_Wire):
    index: int
    label: str
    score: float


class ClipResult(_Wire):
    """One clip's answer. ``index``/``label`` name the top class of what is returned; the
    mode decides which of ``logits``, ``probs`` or ``topk`` is present."""

    index: int
    label: str
    logits: list[float] | None = None
    probs: list[float] | None = None
    topk: list[TopKEntry] | None = None


class BudgetState(_Wire):
    key_id: str
    budget: int
    spent: int
    remaining: int


class ClassifyResponse(_Wire):
    model: str
    output: OutputMode
    top_k: int | None = None
    results: list[ClipResult]
    budget: BudgetState
    request_id: str
    replayed: bool = False


class ModelInfo(_Wire):
    model: str
    architecture: str
    num_classes: int
    labels: list[str]
    input: InputSpecWire
    output: OutputMode
    top_k: int | None = None
    max_clips_per_request: int
    max_body_bytes: int
    content_types: list[str]
    # Which key is asking, and an opaque digest of everything that shapes its answers (output
    # mode, top-k, output defenses, poisoning on alarm). Answers paid under one (key, policy)
    # are never reused under another. ``None`` from servers older than this field.
    key_id: str | None = None
    policy_fingerprint: Annotated[
        str | None, Field(pattern=r"^[0-9a-f]{8,64}$", description="opaque; changes with policy")
    ] = None


# prada: PRADA on the victim's penultimate features; prada_stats: PRADA on the naturalness
# statistics; ood: out-of-distribution rate monitor (energy score, CUSUM); seat: near-duplicate
# queries in a learned similarity space (SEAT); none: no detection.
DetectorName = Literal["prada", "prada_stats", "ood", "seat", "none"]
DetectionAction = Literal["log", "throttle", "block", "poison"]


def _json_integer(value: object) -> object:
    """JSON Schema's integer: a number without a fraction (5 and 5.0), never a string or bool."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Request bodies take numbers and booleans as the JSON types the OpenAPI schema names ("5", 0
# for false and "0.5" are refused), not pydantic's lax coercions; 5.0 is an integer, as in JSON
# Schema.
# Constraints go before the validator (``Annotated[int, Field(ge=1, strict=True), JSON_INTEGER]``)
# so the OpenAPI schema states them as JSON Schema (``minimum``), not as pydantic's ``ge``.
JSON_INTEGER = BeforeValidator(_json_integer)
JsonInt = Annotated[int, Field(strict=True), JSON_INTEGER]


class DetectionPolicy(_Wire):
    detector: DetectorName = "none"
    delta: Annotated[float, Field(gt=0.0, lt=1.0, strict=True)] = 0.85
    action: DetectionAction = "log"


class ReverseSigmoid(_Wire):
    """Lee et al.'s reverse-sigmoid perturbation: top-1 preserved, gradients misleading."""

    beta: Annotated[float, Field(gt=0.0, strict=True)] = 0.7
    gamma: Annotated[float, Field(gt=0.0, strict=True)] = 0.4


class GaussianNoise(_Wire):
    sigma: Annotated[float, Field(ge=0.0, le=1.0, strict=True)] = 0.05


class PredictionPoisoning(_Wire):
    """MAD (Orekondy et al., ICLR 2020): move the answer within ``epsilon`` (L1 or L2) toward the
    one-hot target that turns a surrogate student's gradient the furthest; ``keep_argmax``
    (MAD-argmax) keeps the top-1 class, so benign top-1 is unchanged. ``surrogate_seed`` draws
    the defender's surrogate head: keep it secret in production."""

    epsilon: Annotated[float, Field(gt=0.0, le=2.0, strict=True)] = 0.5
    norm: Literal["l1", "l2"] = "l1"
    keep_argmax: Annotated[bool, Field(strict=True)] = True
    surrogate_seed: Annotated[int, Field(ge=0, le=2**32 - 1, strict=True), JSON_INTEGER] = 0

    @model_validator(mode="after")
    def _reachable(self) -> PredictionPoisoning:
        # Two points of the simplex are at most 2 apart in L1 and sqrt(2) in L2.
        if self.norm == "l2" and self.epsilon > 2**0.5:
            raise ValueError(f"an l2 epsilon is at most sqrt(2), got {self.epsilon}")
        return self


class AdaptiveMisinformation(_Wire):
    """Kariyappa & Qureshi (CVPR 2020): a clip whose top probability is below ``tau`` (looks out
    of distribution) is answered mostly by a misinformation function, with the switch
    ``alpha = sigmoid(nu * (tau - max p))``. Calibrate ``tau`` on benign clips (the fraction of
    them answered with misinformation is the fraction whose top probability is below it)."""

    tau: Annotated[float, Field(gt=0.0, lt=1.0, strict=True)]
    nu: Annotated[float, Field(gt=0.0, le=10_000.0, strict=True)] = 1000.0


class DefensePolicy(_Wire):
    """Output defenses applied in order: adaptive misinformation and prediction poisoning (on
    the model's own answer), then reverse sigmoid, noise, top-k, rounding, label-only."""

    adaptive_misinformation: AdaptiveMisinformation | None = None
    prediction_poisoning: PredictionPoisoning | None = None
    reverse_sigmoid: ReverseSigmoid | None = None
    gaussian_noise: GaussianNoise | None = None
    round_decimals: Annotated[int, Field(ge=0, le=8, strict=True), JSON_INTEGER] | None = None
    top_k: Annotated[int, Field(ge=1, strict=True), JSON_INTEGER] | None = None
    label_only: Annotated[bool, Field(strict=True)] = False


class KeyCreate(_Wire):
    budget: Annotated[int, Field(ge=0, le=10**12, strict=True), JSON_INTEGER]
    output: OutputMode = OutputMode.PROBS
    top_k: Annotated[int, Field(ge=1, strict=True), JSON_INTEGER] = 5
    name: Annotated[str, Field(min_length=1, max_length=128)] = "client"
    detection: DetectionPolicy | None = Field(
        default=None,
        description="omitted: the server's default detection (the OOD monitor where the model "
        "has a calibration, action log)",
    )
    defenses: DefensePolicy = Field(default_factory=DefensePolicy)


class KeyPublic(_Wire):
    key_id: str
    name: str
    budget: int
    spent: int
    remaining: int
    output: OutputMode
    top_k: int
    created_at: datetime
    revoked: bool
    detection: DetectionPolicy
    defenses: DefensePolicy


class KeyCreated(KeyPublic):
    api_key: str = Field(description="The secret, shown once; only its hash is stored.")


class TopUp(_Wire):
    amount: Annotated[int, Field(gt=0, le=10**12, strict=True), JSON_INTEGER]


class DetectionStatus(_Wire):
    key_id: str
    detector: DetectorName
    delta: float
    action: DetectionAction
    queries: int
    distances: int
    w: float | None = None
    score: float | None = Field(
        default=None, description="the detector's statistic: PRADA's W, or the ood CUSUM S"
    )
    alarm: bool = False
    alarm_at: datetime | None = None
    alarm_query: int | None = None

    @model_validator(mode="after")
    def _alarm_has_time(self) -> DetectionStatus:
        if self.alarm and self.alarm_at is None:
            raise ValueError("an alarm needs alarm_at")
        return self
