"""Several detectors judged on one query stream: each observes every answered batch under its
own key, through the victim's own detection service (real Redis state), as ``/v1/classify``
does after charging. The model answers each batch once for all of them."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.schemas import DetectionPolicy
from victim_server.detection.base import DetectorUnavailable, Observation
from victim_server.services import Services

__all__ = ["DEFAULT_DELTA", "DetectorPanel", "available_detectors", "replay_requests"]

DEFAULT_DELTA = 0.85


def available_detectors(services: Services) -> tuple[str, ...]:
    """Every detector in the victim's registry that the served model can feed."""
    names = []
    for name, detector in services.detection.detectors.items():
        try:
            detector.check()
        except DetectorUnavailable:
            continue
        names.append(name)
    return tuple(names)


@dataclass
class DetectorPanel:
    """First alarm, statistic trajectory and observe time per detector, for one stream."""

    services: Services
    stream: str  # the detectors' key ids are ``{stream}-{detector}``
    detectors: tuple[str, ...]
    delta: float = DEFAULT_DELTA
    queries: int = 0
    alarms: dict[str, int | None] = field(default_factory=dict)
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.detectors:
            self.alarms.setdefault(name, None)
            self.curves.setdefault(name, [])
            self.seconds.setdefault(name, 0.0)

    async def observe(
        self, clips: np.ndarray, logits: np.ndarray, features: np.ndarray | None
    ) -> None:
        """One request's answered clips, seen by every detector."""
        batch = Observation(clips, logits, features, delta=self.delta)
        self.queries += len(clips)
        for name in self.detectors:
            policy = DetectionPolicy(detector=name, delta=self.delta, action="log")  # type: ignore[arg-type]
            started = time.perf_counter()
            verdict = await self.services.detection.observe(f"{self.stream}-{name}", policy, batch)
            self.seconds[name] += time.perf_counter() - started
            if verdict is None:
                raise RuntimeError(f"detector {name} did not observe {self.stream}")
            if verdict.score is not None:
                self.curves[name].append((verdict.queries, round(verdict.score, 4)))
            if self.alarms[name] is None and verdict.alarm:
                self.alarms[name] = verdict.alarm_query

    def summary(self, name: str, *, curve_points: int = 200) -> dict[str, Any]:
        curve = self.curves[name]
        return {
            "first_alarm": self.alarms[name],
            "final_score": curve[-1][1] if curve else None,
            "ms_per_clip_observe": round(1e3 * self.seconds[name] / max(self.queries, 1), 3),
            "curve": curve[:: max(1, len(curve) // curve_points)],
        }


async def replay_requests(panel: DetectorPanel, requests: Iterable[np.ndarray]) -> DetectorPanel:
    """Answer each request (one forward pass) and let every detector of ``panel`` observe it."""
    for clips in requests:
        output = await panel.services.batcher.submit(clips)
        await panel.observe(clips, output.logits, output.features)
    return panel
