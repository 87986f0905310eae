"""The detector plug-in interface: observe a key's answered batch -> score, alarm.

A detector sees what the request path already has after one forward pass (the clips, the
victim's logits and its penultimate features) and keeps its state per API key in Redis, so
several server processes agree and a restart keeps it. Detectors are chosen per key by name
(``DetectionPolicy.detector``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import numpy as np

__all__ = ["DetectionBusy", "Detector", "DetectorUnavailable", "Observation", "Verdict"]


@dataclass(frozen=True)
class Observation:
    """One answered batch, in query order."""

    clips: np.ndarray  # uint8 (N, T, H, W, 3), as received
    logits: np.ndarray  # (N, C) float32
    features: np.ndarray | None  # (N, D) float32 penultimate activations, when the model has them
    delta: float = 0.85  # the key's PRADA threshold (detectors without one ignore it)
    # (N, E) float32 SEAT encoder embeddings from the inference micro-batch's encoder pass, when
    # the request asked for them (a ``seat`` key); the detector embeds the clips itself otherwise
    embeddings: np.ndarray | None = None

    @property
    def labels(self) -> np.ndarray:
        return self.logits.argmax(axis=1)


@dataclass(frozen=True)
class Verdict:
    queries: int
    distances: int  # PRADA: distances pooled; other detectors: 0
    w: float | None  # PRADA's Shapiro-Wilk W (None for other detectors)
    alarm: bool
    alarm_query: int | None
    alarm_at: datetime | None
    new_alarm: bool = False  # this update raised the alarm
    score: float | None = None  # the detector's statistic (PRADA: W; OOD monitor: CUSUM S)


class DetectionBusy(Exception):
    """The key's detector lock could not be taken in time."""


class DetectorUnavailable(Exception):
    """The served model cannot feed this detector (no features, no calibration)."""


class Detector(Protocol):
    name: str

    def check(self) -> None:
        """Raise :class:`DetectorUnavailable` when this detector cannot run on the served model."""
        ...

    async def observe(self, key_id: str, batch: Observation) -> Verdict: ...

    async def status(self, key_id: str) -> Verdict: ...

    async def reset(self, key_id: str) -> None: ...
