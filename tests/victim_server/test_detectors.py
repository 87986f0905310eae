"""Detector plug-ins against a real redis-server: PRADA's incremental store, the OOD monitor's
CUSUM script, per-detector state."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import redis.asyncio as aioredis

from shared.detection import PradaConfig, PradaState, observe
from shared.detection.ood import CusumState, OodCalibration, cusum_observe
from victim_server.accounting.connection import connect_redis
from victim_server.detection.base import DetectionBusy, Observation
from victim_server.detection.ood import OodDetector
from victim_server.detection.store import PradaStore


async def test_prada_store_writes_only_changed_slots_and_reloads_exactly(
    binary_redis: aioredis.Redis,
) -> None:
    """Small sets (max_set 8) force reservoir replacements; a second store (another process)
    must load what the in-memory reference holds after the same stream."""
    dim, config = 16, PradaConfig(delta=0.85, max_set=8, max_distances=40)
    rng = np.random.default_rng(0)
    # a spreading cloud: later queries lie farther out, so they keep joining G_c
    spread = np.linspace(1.0, 60.0, 600, dtype=np.float32)[:, None]
    vectors = (rng.normal(size=(600, dim)) * spread).astype(np.float32)
    labels = rng.integers(0, 3, 600)
    writer = PradaStore(binary_redis, dim=dim, namespace="prada")
    reference = PradaState(dim=dim)
    for start in range(0, 600, 25):
        await writer.observe("k1", config, vectors[start : start + 25], labels[start : start + 25])
    for v, c in zip(vectors, labels, strict=True):
        observe(reference, config, v, int(c))
    reader = PradaStore(binary_redis, dim=dim, namespace="prada")  # cold: reads Redis
    _, loaded, _ = await reader._load("k1")
    assert loaded.queries == reference.queries == 600 and loaded.w == reference.w
    for label, cls in reference.classes.items():
        assert cls.seen > config.max_set  # replacements happened
        np.testing.assert_array_equal(loaded.classes[label].members, cls.members)
        np.testing.assert_allclose(loaded.classes[label].distances, cls.distances, rtol=1e-6)
    blob = await binary_redis.get("vs:{k1}:det:prada:G:0")
    assert isinstance(blob, bytes) and len(blob) == config.max_set * dim * 4
    other = PradaStore(binary_redis, dim=dim, namespace="prada_stats")
    assert (await other.status("k1")).queries == 0  # detectors never share state
    await writer.reset("k1")
    assert (await reader.status("k1")).queries == 0


async def test_prada_store_two_processes_at_once_lose_no_query_and_free_the_lock(
    binary_redis: aioredis.Redis, redis_url: str
) -> None:
    """Two stores (two server processes) updating one key concurrently: every query counted
    once, the result equal to the reference fed the same batches in some order, the lock
    released with each write; a lock held by someone else makes an update wait, then refuse."""
    dim, config = 8, PradaConfig(delta=0.85, max_set=16, max_distances=64)
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(240, dim)).astype(np.float32)
    labels = rng.integers(0, 2, 240)
    other = connect_redis(redis_url, decode=False)
    try:
        stores = [
            PradaStore(binary_redis, dim=dim, namespace="prada"),
            PradaStore(other, dim=dim, namespace="prada"),
        ]
        batches = [(vectors[i : i + 10], labels[i : i + 10]) for i in range(0, 240, 10)]
        verdicts = await asyncio.gather(
            *(stores[i % 2].observe("k3", config, v, c) for i, (v, c) in enumerate(batches))
        )
        assert sorted(v.queries for v in verdicts) == list(range(10, 250, 10))
        assert await binary_redis.exists("vs:{k3}:det:prada:lock") == 0
        _, loaded, _ = await PradaStore(binary_redis, dim=dim)._load("k3")
        reference = PradaState(dim=dim)  # the batches in the order the lock let them in
        for _, (v, c) in sorted(zip((v.queries for v in verdicts), batches, strict=True)):
            for vector, label in zip(v, c, strict=True):
                observe(reference, config, vector, int(label))
        # a store that reloaded the state computes W from float32 distances: equal to rounding
        assert loaded.queries == reference.queries == 240
        assert loaded.w == pytest.approx(reference.w, rel=1e-6)
        for label, cls in reference.classes.items():
            np.testing.assert_array_equal(loaded.classes[label].members, cls.members)

        await binary_redis.set("vs:{k3}:det:prada:lock", b"someone-else", px=60_000)
        impatient = PradaStore(binary_redis, dim=dim, lock_timeout_s=0.05)
        with pytest.raises(DetectionBusy):
            await impatient.observe("k3", config, vectors[:1], labels[:1])
        assert (await impatient.status("k3")).queries == 240  # nothing written meanwhile
        assert await binary_redis.get("vs:{k3}:det:prada:lock") == b"someone-else"
    finally:
        await other.aclose()


def _calibration() -> OodCalibration:
    return OodCalibration.fit(np.linspace(-10.0, -5.0, 1000), quantile=0.99)


def _batch(flags: np.ndarray, calibration: OodCalibration) -> Observation:
    """Logits whose energy is above the threshold exactly where ``flags`` is set."""
    n = len(flags)
    logits = np.zeros((n, 4), dtype=np.float32)
    logits[:, 0] = np.where(flags, 0.0, 20.0)  # energy ~ -1.4 (flagged) or ~ -20 (not)
    assert (calibration.flags(logits) == flags).all()
    return Observation(np.zeros((n, 1, 1, 1, 3), np.uint8), logits, None)


async def test_ood_script_follows_the_reference_cusum_across_processes(
    binary_redis: aioredis.Redis, redis_url: str
) -> None:
    calibration = _calibration()
    other = connect_redis(redis_url, decode=False)
    try:
        detectors = [OodDetector(binary_redis, calibration), OodDetector(other, calibration)]
        reference = CusumState()
        rng = np.random.default_rng(3)
        # benign-looking (2% flagged), then an attack (60% flagged): one alarm, at the same query
        flags = np.concatenate([rng.random(300) < 0.02, rng.random(200) < 0.6])
        new_alarms = 0
        for i, start in enumerate(range(0, 500, 20)):
            part = flags[start : start + 20]
            verdict = await detectors[i % 2].observe("k2", _batch(part, calibration))
            cusum_observe(reference, calibration, part)
            new_alarms += verdict.new_alarm
            assert verdict.score == pytest.approx(reference.statistic, abs=1e-9)
            assert verdict.alarm_query == reference.alarm_query
        status = await detectors[0].status("k2")
        assert reference.alarm_query is not None and reference.alarm_query > 300
        assert new_alarms == 1 and status.alarm and status.alarm_at is not None
        assert status.queries == 500 and status.w is None
        await detectors[1].reset("k2")
        assert (await detectors[0].status("k2")).queries == 0
    finally:
        await other.aclose()


async def test_ood_detector_without_calibration_is_unavailable(
    binary_redis: aioredis.Redis,
) -> None:
    from victim_server.detection.base import DetectorUnavailable

    with pytest.raises(DetectorUnavailable, match="calibrate-detectors"):
        OodDetector(binary_redis, None).check()
