"""SEAT as a detector plug-in (``seat``): queries near each other or near known attack patterns.

After Zhang, Chen and Wagner, "SEAT: Similarity Encoder by Adversarial Training for Detecting
Model Extraction Attack Queries" (AISec 2021): an encoder trained so that augmented copies of
benign clips land close (``seat_encoder.py``, trained by ``python -m victim_server
train-detector``) maps every query to a unit vector; an account whose queries keep falling near
its own earlier queries is extracting. Benign users rarely send two clips that close; extraction
streams do (perturbed copies of seeds, overlapping windows of one video, one image moved about,
out-of-distribution inputs that the encoder collapses together), or whose queries keep falling
near known attack patterns (``seat_patterns``: a bank of embedded clips of generic extraction
query families, noise, affine-warped images, shuffled frames, beside benign references).

Per key, a ring of the last :data:`RING` query embeddings is kept in Redis. Each new clip is
compared with the ring (and the clips before it in its request), and the number of near pairs
(within the calibrated distance ``threshold``) is counted. A clip is *flagged* when at least
``neighbours`` (2) earlier queries lie that near: one near copy is what a user who uploads two
windows of one video sends (on the benign video-folder stream, 21% of clips have one near
neighbour, 1.5% have two); extraction streams send many. A clip is also flagged when it lies
near a known attack pattern (``PatternBank.flags``: nearer the bank's attack patterns than its
benign references, by a calibrated ratio); distinct synthetic clips (stacked affine images, each
one new) have no near copies but land there. A Bernoulli CUSUM of the flags (the OOD monitor's
test, ``shared.detection.ood``) alarms when the key's flag rate has shifted from the benign rate
to the attack rate. The near-pair threshold is the 1% quantile of the distance to the second
nearest earlier query in benign same-class sessions on a SynthActions seed the encoder never saw
(``seat_train.calibrate_seat``), so benign queries are flagged about 1% of the time; the pattern
threshold flags about 0.2% of benign clips, and the CUSUM is fitted on the combined rate
(``seat_patterns_build``). Without its bank (missing, corrupt, or built with another encoder)
the detector logs a warning once and runs the near-copy half alone.

Cost per clip is bounded whatever the history: one encoder pass (on the served path, over the
whole inference micro-batch right after the model's forward, ``ModelRunner(..., embed=)``, asked
for by requests of ``seat`` keys; the detector embeds clips that come without embeddings), a
distance to each member of the key's ring (:data:`RING` x 64 float32 = 256 KiB per key, the
memory bound), one distance to each of the bank's few hundred vectors, one Redis script. The
ring is read from Redis only when this process's copy of it is not current (``seat_ring``:
another process wrote since, or none is held): then one read more. Layout::

    vs:{key_id}:det:seat        hash: statistic, queries, flagged, pairs, near_pattern,
                                alarm_query, alarm_at, ring_id
    vs:{key_id}:det:seat:ring   float32 bytes: the last RING embeddings, slot = query % RING

The script writes the request's embeddings at their slots and runs the CUSUM atomically; two
concurrent requests of one key do not see each other's clips (a pair split across them is
missed: detection fails open, never double counts).
"""

from __future__ import annotations

import json
import logging
import math
import secrets
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from redis.asyncio import Redis

from shared.detection.ood import OodCalibration
from victim_server.accounting import keyspace
from victim_server.detection.base import DetectorUnavailable, Observation, Verdict
from victim_server.detection.ood import CUSUM_SCRIPT, cusum_result, cusum_status, now_iso
from victim_server.detection.seat_encoder import SEAT_WEIGHTS, SeatModel, load_seat_model
from victim_server.detection.seat_patterns import (
    PatternBank,
    PatternBankError,
    load_patterns,
    patterns_path,
)
from victim_server.detection.seat_ring import RingCopies, RingCopy, ring_copy

__all__ = ["NEIGHBOURS", "RING", "SeatCalibration", "SeatDetector", "kth_nearest", "load_seat"]

log = logging.getLogger("vidsteal.victim.detection")

# Recent query embeddings kept per key: the per-clip cost and memory bound.
RING = 1024
# Near earlier queries that flag a clip.
NEIGHBOURS = 2

# ARGV after the CUSUM's five: ring size, bytes per embedding, the request's embeddings
# (concatenated float32), near pairs in this request, clips near a known attack pattern, the
# ring the flags were computed against ("ring_id:queries", or "" for whatever it is now: see
# seat_ring), an id for the ring if it has none yet. Answers {"stale"} and writes nothing when
# that ring has moved on; else writes each embedding at slot (queries before it) % ring, then
# the CUSUM (CUSUM_SCRIPT) updates the hash.
_RING_THEN_CUSUM = (
    """
local q0 = tonumber(redis.call('HGET', KEYS[1], 'queries') or '0')
if ARGV[11] ~= '' and (redis.call('HGET', KEYS[1], 'ring_id') or '') .. ':' .. q0 ~= ARGV[11] then
  return {'stale'}
end
redis.call('HSETNX', KEYS[1], 'ring_id', ARGV[12])
local ring, width, blob = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8]
for i = 0, #ARGV[4] - 1 do
  local slot = (q0 + i) % ring
  redis.call('SETRANGE', KEYS[2], slot * width, string.sub(blob, i * width + 1, (i + 1) * width))
end
redis.call('HINCRBY', KEYS[1], 'pairs', ARGV[9])
redis.call('HINCRBY', KEYS[1], 'near_pattern', ARGV[10])
"""
    + CUSUM_SCRIPT
)


def kth_nearest(ring: np.ndarray, vector: np.ndarray, k: int) -> float:
    """The L2 distance from unit ``vector`` to its ``k``-th nearest member of ``ring`` (unit
    vectors; inf when the ring has fewer than ``k``)."""
    if len(ring) < k:
        return math.inf
    squared = np.maximum(2.0 - 2.0 * (ring @ vector), 0.0)
    return float(np.sqrt(np.partition(squared, k - 1)[k - 1]))


@dataclass(frozen=True)
class SeatCalibration:
    """Near-pair threshold and the CUSUM on the near-neighbour rate (in the encoder's JSON)."""

    threshold: float  # L2 distance between unit embeddings below which two queries pair up
    benign_rate: float
    attack_rate: float
    limit: float
    ring: int = RING
    neighbours: int = NEIGHBOURS  # near earlier queries that flag a clip
    source: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(
        cls,
        nearest: np.ndarray,
        *,
        neighbours: int = NEIGHBOURS,
        quantile: float = 0.99,
        margin: float = 2.0,
        attack_rate: float = 0.25,
        arl: float = 1e6,
        ring: int = RING,
        source: dict[str, Any] | None = None,
    ) -> SeatCalibration:
        """From benign queries' distances to their ``neighbours``-th nearest earlier query in
        the ring: the threshold is their ``1 - quantile`` quantile (benign flag rate
        ``1 - quantile``) and the CUSUM is the OOD monitor's, fitted by ``OodCalibration.fit``
        on the negated distances (a near neighbour is a high score): benign rate x ``margin``,
        ``limit = log(arl)``."""
        test = OodCalibration.fit(
            -np.asarray(nearest, dtype=np.float64),
            quantile=quantile,
            margin=margin,
            attack_rate=attack_rate,
            arl=arl,
            source=source,
        )
        return cls(
            threshold=-test.threshold,
            benign_rate=test.benign_rate,
            attack_rate=test.attack_rate,
            limit=test.limit,
            ring=ring,
            neighbours=neighbours,
            source=test.source,
        )

    @property
    def increments(self) -> tuple[float, float]:
        p0, p1 = self.benign_rate, self.attack_rate
        return math.log(p1 / p0), math.log((1 - p1) / (1 - p0))

    def with_source(self, **extra: Any) -> SeatCalibration:
        return replace(self, source={**self.source, **extra})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SeatCalibration:
        return cls(**data)


def load_seat(path: Path | None = None) -> tuple[SeatModel, SeatCalibration]:
    """The encoder at ``path`` (default: committed) and its calibration; raises
    :class:`DetectorUnavailable` when either is missing."""
    model = load_seat_model(path)
    if "calibration" not in model.record:
        raise DetectorUnavailable(f"the SEAT encoder at {path} has no calibration in its .json")
    return model, SeatCalibration.from_dict(model.record["calibration"])


class SeatDetector:
    name = "seat"

    def __init__(self, redis: Redis, *, path: Path | None = None) -> None:
        """``redis`` must return bytes (the ring is binary). The encoder is loaded from ``path``
        (default: the committed weights) at construction; if it cannot be, the detector is
        unavailable and says why. Its attack-pattern bank (``patterns_path(path)``) is loaded
        with it; without a valid bank the detector logs a warning and flags near copies only
        (``patterns_why`` says why)."""
        self._redis = redis
        self._script = redis.register_script(_RING_THEN_CUSUM)
        self._rings = RingCopies()
        self._why: str | None = None
        self.model: SeatModel | None = None
        self.calibration: SeatCalibration | None = None
        self.patterns: PatternBank | None = None
        self.patterns_why: str | None = None
        weights = path or SEAT_WEIGHTS
        try:
            self.model, self.calibration = load_seat(path)
        except DetectorUnavailable as exc:
            self._why = str(exc)
            return
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            self._why = f"the SEAT encoder at {path or 'the default path'} cannot be read: {exc}"
            return
        try:
            self.patterns = load_patterns(
                patterns_path(weights), weights=weights, dim=self.model.encoder.dim
            )
        except PatternBankError as exc:
            self.patterns_why = str(exc)
            log.warning("seat: near copies only, %s", exc)

    def check(self) -> None:
        if self._why is not None:
            raise DetectorUnavailable(self._why)

    def _names(self, key_id: str) -> list[str]:
        return [keyspace.detection(key_id, "seat"), keyspace.detection(key_id, "seat:ring")]

    async def observe(self, key_id: str, batch: Observation) -> Verdict:
        """The batch's embeddings from the inference micro-batch's encoder pass when it has
        them (the served path), else one encoder pass over its clips here."""
        self.check()
        assert self.model is not None
        vectors = batch.embeddings
        if vectors is None or vectors.shape != (len(batch.clips), self.model.encoder.dim):
            vectors = await anyio.to_thread.run_sync(self.model.embed, batch.clips)
        return await self.observe_embeddings(key_id, vectors)

    async def observe_embeddings(self, key_id: str, vectors: np.ndarray) -> Verdict:
        """The state update for clips already embedded (unit vectors, in query order): against
        this process's copy of the key's ring when it has a current one (one Redis call), else
        the ring read from Redis (two)."""
        self.check()
        assert self.calibration is not None
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        copy = self._rings.get(key_id)
        if copy is not None and len(copy.vectors) == self.calibration.ring:
            verdict = await self._update(key_id, vectors, copy, expect=copy.name)
            if verdict is not None:
                return verdict
        copy = await self._read_ring(key_id, dim=vectors.shape[1])
        verdict = await self._update(key_id, vectors, copy, expect="")
        assert verdict is not None  # no expectation: never stale
        return verdict

    async def _update(
        self, key_id: str, vectors: np.ndarray, ring: RingCopy, *, expect: str
    ) -> Verdict | None:
        """Flags against ``ring``, then the script; None when Redis's ring is not ``expect``."""
        assert self.calibration is not None
        flags, pairs = near_flags(
            ring.held(), vectors, self.calibration.threshold, self.calibration.neighbours
        )
        near_pattern = 0
        if self.patterns is not None:
            on_pattern = self.patterns.flags(vectors)
            near_pattern = int(on_pattern.sum())
            flags = [f or bool(p) for f, p in zip(flags, on_pattern, strict=True)]
        up, down = self.calibration.increments
        fresh_id = secrets.token_hex(8)
        raw = await self._script(
            keys=self._names(key_id),
            args=[
                repr(up),
                repr(down),
                repr(self.calibration.limit),
                "".join("1" if f else "0" for f in flags),
                now_iso(),
                self.calibration.ring,
                vectors.shape[1] * 4,
                vectors.tobytes(),
                pairs,
                near_pattern,
                expect,
                fresh_id,
            ],
        )
        if len(raw) == 1:
            self._rings.drop(key_id)
            return None
        verdict = cusum_result(raw)
        if verdict.queries == ring.queries + len(vectors):  # nobody wrote in between
            ring.ring_id = ring.ring_id or fresh_id  # an id-less ring got ours in the script
            self._rings.put(key_id, ring.advanced(vectors))
        else:
            self._rings.drop(key_id)
        return verdict

    async def _read_ring(self, key_id: str, *, dim: int) -> RingCopy:
        assert self.calibration is not None
        hash_name, ring_name = self._names(key_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hmget(hash_name, ["queries", "ring_id"])
            pipe.get(ring_name)
            (queries, ring_id), blob = await pipe.execute()
        return ring_copy(
            ring_id.decode() if ring_id else "",
            int(queries or 0),
            blob or b"",
            size=self.calibration.ring,
            dim=dim,
        )

    async def status(self, key_id: str) -> Verdict:
        return await cusum_status(self._redis, self._names(key_id)[0])

    async def reset(self, key_id: str) -> None:
        self._rings.drop(key_id)
        await self._redis.delete(*self._names(key_id))


def near_flags(
    ring: np.ndarray, vectors: np.ndarray, threshold: float, neighbours: int
) -> tuple[list[bool], int]:
    """Per clip: has it ``neighbours`` near ones (within ``threshold``) among ``ring`` and the
    clips before it? And the number of near pairs."""
    held = len(ring)
    candidates = np.concatenate([ring, vectors])
    # squared distances of unit vectors: 2 - 2 cos
    near = 2.0 - 2.0 * (vectors @ candidates.T) < threshold**2
    flags, pairs = [], 0
    for i in range(len(vectors)):
        count = int(near[i, : held + i].sum())  # the ring and the clips before this one
        flags.append(count >= neighbours)
        pairs += count
    return flags, pairs
