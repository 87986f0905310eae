"""Out-of-distribution rate monitor: the victim's own confidence per clip, a CUSUM per key.

Per clip, a score from the victim's logits (higher = less like the training distribution):

* ``energy``: ``-logsumexp(logits)`` (Liu et al. 2020, energy-based OOD detection);
* ``msp``: ``1 - max softmax`` (Hendrycks & Gimpel 2017, maximum softmax probability).

A clip is *flagged* when its score exceeds ``threshold``, the ``quantile`` of the scores of
benign calibration clips. Benign traffic is flagged at rate about ``1 - quantile``; an
extraction stream built from other data (noise, affine-warped images, other videos) is
flagged far more often. A Bernoulli CUSUM (Page 1954) per key tests "flag rate ``benign_rate``"
against "flag rate ``attack_rate``": each clip adds its log-likelihood ratio,

    flagged:      log(attack_rate / benign_rate)
    not flagged:  log((1 - attack_rate) / (1 - benign_rate))

to ``S = max(0, S + increment)``, and the key alarms when ``S >= limit``. ``benign_rate`` is
the calibration's flag rate times ``margin`` (benign traffic from other seeds may be flagged
a little more often than the calibration clips); ``limit = log(arl)`` bounds the expected run
length of benign traffic at that rate before a false alarm from below by ``arl`` queries
(Lorden's bound for a CUSUM of log-likelihood ratios). Cost: O(1) per clip, O(1) state.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

__all__ = ["CusumState", "OodCalibration", "ScoreKind", "clip_scores", "cusum_observe"]

ScoreKind = Literal["energy", "msp"]


def clip_scores(logits: np.ndarray, kind: ScoreKind) -> np.ndarray:
    """(N,) OOD scores of (N, C) logits; higher means less like the benign distribution."""
    z = np.asarray(logits, dtype=np.float64)
    top = z.max(axis=1, keepdims=True)
    log_total = np.log(np.exp(z - top).sum(axis=1)) + top[:, 0]
    if kind == "energy":
        return -log_total
    return 1.0 - np.exp(top[:, 0] - log_total)


@dataclass(frozen=True)
class OodCalibration:
    """The benign calibration and the sequential test built on it (JSON, committed per model)."""

    score: ScoreKind
    threshold: float
    benign_rate: float
    attack_rate: float
    limit: float
    source: dict[str, Any] = field(default_factory=dict)  # what the calibration clips were

    @classmethod
    def fit(
        cls,
        benign_scores: np.ndarray,
        *,
        score: ScoreKind = "energy",
        quantile: float = 0.99,
        margin: float = 2.0,
        attack_rate: float = 0.25,
        arl: float = 1e6,
        source: dict[str, Any] | None = None,
    ) -> OodCalibration:
        scores = np.asarray(benign_scores, dtype=np.float64)
        if scores.size < 100:
            raise ValueError(f"calibration needs at least 100 benign scores, got {scores.size}")
        threshold = float(np.quantile(scores, quantile))
        observed = float((scores > threshold).mean())
        benign_rate = min(0.5, max(observed, 1.0 - quantile) * margin)
        if not benign_rate < attack_rate < 1.0:
            raise ValueError(f"attack_rate {attack_rate} must lie in ({benign_rate}, 1)")
        return cls(
            score=score,
            threshold=threshold,
            benign_rate=benign_rate,
            attack_rate=attack_rate,
            limit=math.log(arl),
            source={
                **(source or {}),
                "clips": int(scores.size),
                "quantile": quantile,
                "margin": margin,
                "arl": arl,
                "observed_flag_rate": observed,
            },
        )

    @property
    def increments(self) -> tuple[float, float]:
        """(flagged, not flagged) log-likelihood ratios."""
        p0, p1 = self.benign_rate, self.attack_rate
        return math.log(p1 / p0), math.log((1 - p1) / (1 - p0))

    def flags(self, logits: np.ndarray) -> np.ndarray:
        return clip_scores(logits, self.score) > self.threshold

    def to_json(self) -> str:
        return json.dumps({"detector": "ood", **asdict(self)}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> OodCalibration:
        data = json.loads(text)
        if data.pop("detector", None) != "ood":
            raise ValueError("not an OOD monitor calibration")
        return cls(**data)

    @classmethod
    def load(cls, path: Path) -> OodCalibration:
        return cls.from_json(path.read_text())


@dataclass
class CusumState:
    statistic: float = 0.0
    queries: int = 0
    flagged: int = 0
    alarm_query: int | None = None


def cusum_observe(state: CusumState, calibration: OodCalibration, flags: np.ndarray) -> None:
    """Feed flags (in query order) through the CUSUM; mutates ``state`` (the reference the
    victim's Redis script follows)."""
    up, down = calibration.increments
    for flag in np.asarray(flags, dtype=bool):
        state.queries += 1
        state.flagged += int(flag)
        state.statistic = max(0.0, state.statistic + (up if flag else down))
        if state.alarm_query is None and state.statistic >= calibration.limit:
            state.alarm_query = state.queries
