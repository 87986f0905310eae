"""Detection for the request path: gate a key before charging, feed answered batches to the
key's detector, and say whether the key's answers must be poisoned. The detector is chosen per
key by name (``DetectionPolicy.detector``) among the plug-ins the app was built with."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from shared.problems import ProblemType
from shared.schemas import DetectionPolicy, DetectionStatus
from victim_server.api.problems import problem
from victim_server.coalesce import Coalescer
from victim_server.detection.base import (
    DetectionBusy,
    Detector,
    DetectorUnavailable,
    Observation,
    Verdict,
)
from victim_server.metrics import VictimMetrics

__all__ = ["DetectionService"]

log = logging.getLogger("vidsteal.victim.detection")


class DetectionService:
    def __init__(
        self,
        detectors: Mapping[str, Detector],
        metrics: VictimMetrics,
        *,
        throttle_retry_after_s: float,
    ) -> None:
        self.detectors = dict(detectors)
        self.metrics = metrics
        self.throttle_retry_after_s = throttle_retry_after_s
        self._observe_together: Coalescer[
            tuple[str, int, tuple[int, ...]], tuple[DetectionPolicy, Observation], Verdict | None
        ] = Coalescer(self._observe_group)

    def detector(self, policy: DetectionPolicy) -> Detector | None:
        return None if policy.detector == "none" else self.detectors[policy.detector]

    def check(self, policy: DetectionPolicy) -> None:
        """422 problem when the policy names a detector the served model cannot feed."""
        detector = self.detector(policy)
        if detector is None:
            return
        try:
            detector.check()
        except DetectorUnavailable as exc:
            raise problem(
                ProblemType.VALIDATION_ERROR,
                f"detector {policy.detector!r} is not available for this model: {exc}",
            ) from None

    async def gate(self, key_id: str, policy: DetectionPolicy) -> bool:
        """Refuse (raise) a request from an alarmed key whose action blocks or throttles; True
        when its answers are to be poisoned."""
        detector = self.detector(policy)
        if detector is None or policy.action == "log":
            return False
        verdict = await detector.status(key_id)
        if not verdict.alarm:
            return False
        if policy.action == "block":
            self.metrics.queries.labels(key_id, "blocked").inc()
            raise problem(
                ProblemType.DETECTION_BLOCKED,
                f"key {key_id} is blocked: its query stream looks like model extraction "
                f"({_statistic(policy, verdict)} at query {verdict.alarm_query})",
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
        self, key_id: str, policy: DetectionPolicy, batch: Observation
    ) -> Verdict | None:
        """Feed ``batch`` to the key's detector. The batches of one key that arrive in the same
        loop turn (the requests of one micro-batch) are observed as one, in arrival order, and
        share its verdict."""
        if self.detector(policy) is None:
            return None
        # Policies are parsed once per text (one object per policy), clip shapes must match.
        group = (key_id, id(policy), batch.clips.shape[1:])
        return await self._observe_together(group, (policy, batch))

    async def _observe_group(
        self,
        group: tuple[str, int, tuple[int, ...]],
        items: Sequence[tuple[DetectionPolicy, Observation]],
    ) -> list[Verdict | None]:
        policy = items[0][0]
        batches = [batch for _, batch in items]
        verdict = await self._observe_now(group[0], policy, _joined(batches))
        return [verdict] * len(items)

    async def _observe_now(
        self, key_id: str, policy: DetectionPolicy, batch: Observation
    ) -> Verdict | None:
        detector = self.detector(policy)
        if detector is None:
            return None
        try:
            verdict = await detector.observe(key_id, batch)
        except DetectionBusy:
            # The answer is paid for and computed; detection fails open (and says so).
            log.error("detector of key %s busy: %d clips not observed", key_id, len(batch.logits))
            return None
        except DetectorUnavailable as exc:  # the policy predates a model change
            log.error("detector %s of key %s cannot run: %s", policy.detector, key_id, exc)
            return None
        if verdict.w is not None:
            self.metrics.detection_w.labels(key_id).set(verdict.w)
        if verdict.score is not None:
            self.metrics.detection_score.labels(key_id, policy.detector).set(verdict.score)
        if verdict.new_alarm:
            self.metrics.detection_alarms.labels(policy.action).inc()
            log.warning(
                "%s alarm for key %s at query %s (%s): action %s",
                policy.detector,
                key_id,
                verdict.alarm_query,
                _statistic(policy, verdict),
                policy.action,
            )
        return verdict

    async def status(self, key_id: str, policy: DetectionPolicy) -> DetectionStatus:
        detector = self.detector(policy)
        verdict = (
            Verdict(0, 0, None, False, None, None)
            if detector is None
            else await detector.status(key_id)
        )
        return DetectionStatus(
            key_id=key_id,
            detector=policy.detector,
            delta=policy.delta,
            action=policy.action,
            queries=verdict.queries,
            distances=verdict.distances,
            w=verdict.w,
            score=verdict.score,
            alarm=verdict.alarm,
            alarm_at=verdict.alarm_at,
            alarm_query=verdict.alarm_query,
        )

    async def reset(self, key_id: str) -> None:
        """Clear the key's state in every detector."""
        for detector in self.detectors.values():
            await detector.reset(key_id)


def _joined(batches: list[Observation]) -> Observation:
    if len(batches) == 1:
        return batches[0]
    return Observation(
        clips=np.concatenate([b.clips for b in batches]),
        logits=np.concatenate([b.logits for b in batches]),
        features=_all_or_none([b.features for b in batches]),
        delta=batches[0].delta,
        embeddings=_all_or_none([b.embeddings for b in batches]),
    )


def _all_or_none(parts: list[np.ndarray | None]) -> np.ndarray | None:
    """The parts joined when every batch has one, else None."""
    present = [part for part in parts if part is not None]
    return np.concatenate(present) if len(present) == len(parts) else None


def _statistic(policy: DetectionPolicy, verdict: Verdict) -> str:
    if verdict.w is not None:
        return f"PRADA W={verdict.w:.3f} < {policy.delta}"
    return f"{policy.detector} statistic {verdict.score or 0.0:.2f}"
