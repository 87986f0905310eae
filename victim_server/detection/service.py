"""Detection for the request path: gate a key before charging, feed answered clips to PRADA,
and say whether the key's answers must be poisoned."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import anyio
import numpy as np

from shared.detection import NaturalnessEmbedding, PradaConfig
from shared.problems import ProblemType
from shared.schemas import DetectionPolicy, DetectionStatus
from shared.synthactions import SynthActions
from victim_server.api.problems import problem
from victim_server.detection.store import DetectionBusy, PradaStore, Verdict
from victim_server.metrics import VictimMetrics
from victim_server.models.config import InputSpec

log = logging.getLogger("vidsteal.victim.detection")


def load_embedding(
    calibration: Path | None, spec: InputSpec, default: Path | None
) -> NaturalnessEmbedding:
    """The embedding's benign ranges: a calibration JSON (or .npz of benign clips), the model's
    committed calibration, or -- last resort -- SynthActions clips at the model's clip shape."""
    for path in (calibration, default):
        if path is None or not path.is_file():
            continue
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return NaturalnessEmbedding.fit(np.asarray(data["clips"], dtype=np.uint8))
        return NaturalnessEmbedding.load(path)
    log.warning(
        "no detection calibration given: using SynthActions clips; pass "
        "--detection-calibration with benign clips of your own data"
    )
    frames, size = min(spec.frames, 16), min(spec.height, spec.width, 64)
    clips, _ = SynthActions(seed=0, frames=frames, height=size, width=size).batch(0, 2000)
    return NaturalnessEmbedding.fit(clips)


@dataclass(frozen=True)
class DetectionOutcome:
    verdict: Verdict | None
    poison: bool


class DetectionService:
    def __init__(
        self,
        store: PradaStore,
        embedding: NaturalnessEmbedding,
        metrics: VictimMetrics,
        *,
        throttle_retry_after_s: float,
    ) -> None:
        self.store = store
        self.embedding = embedding
        self.metrics = metrics
        self.throttle_retry_after_s = throttle_retry_after_s

    async def gate(self, key_id: str, policy: DetectionPolicy) -> bool:
        """Refuse (raise) a request from an alarmed key whose action blocks or throttles; True
        when its answers are to be poisoned."""
        if policy.detector == "none" or policy.action == "log":
            return False
        verdict = await self.store.status(key_id)
        if not verdict.alarm:
            return False
        if policy.action == "block":
            self.metrics.queries.labels(key_id, "blocked").inc()
            raise problem(
                ProblemType.DETECTION_BLOCKED,
                f"key {key_id} is blocked: its query stream looks like model extraction "
                f"(PRADA W={verdict.w:.3f} at query {verdict.alarm_query})",
            )
        if policy.action == "throttle":
            self.metrics.queries.labels(key_id, "throttled").inc()
            seconds = self.throttle_retry_after_s
            raise problem(
                ProblemType.DETECTION_THROTTLED,
                "this key is throttled after a detection alarm; nothing was charged",
                headers={"Retry-After": str(int(np.ceil(seconds)))},
                retry_after=seconds,
            )
        return True  # poison

    async def observe(
        self, key_id: str, policy: DetectionPolicy, clips: np.ndarray, labels: np.ndarray
    ) -> Verdict | None:
        if policy.detector == "none":
            return None
        vectors = await anyio.to_thread.run_sync(self.embedding, clips)
        config = PradaConfig(delta=policy.delta)
        try:
            verdict = await self.store.observe(key_id, config, vectors, labels)
        except DetectionBusy:
            # The answer is paid for and computed; detection fails open (and says so).
            log.error("detector of key %s busy: %d clips not observed", key_id, len(labels))
            return None
        if verdict.w is not None:
            self.metrics.detection_w.labels(key_id).set(verdict.w)
        if verdict.new_alarm:
            self.metrics.detection_alarms.labels(policy.action).inc()
            log.warning(
                "PRADA alarm for key %s at query %s (W=%.4f < %.2f): action %s",
                key_id,
                verdict.alarm_query,
                verdict.w or 0.0,
                policy.delta,
                policy.action,
            )
        return verdict

    async def status(self, key_id: str, policy: DetectionPolicy) -> DetectionStatus:
        verdict = await self.store.status(key_id)
        return DetectionStatus(
            key_id=key_id,
            detector=policy.detector,
            delta=policy.delta,
            action=policy.action,
            queries=verdict.queries,
            distances=verdict.distances,
            w=verdict.w,
            alarm=verdict.alarm,
            alarm_at=verdict.alarm_at,
            alarm_query=verdict.alarm_query,
        )
