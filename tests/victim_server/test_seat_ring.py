"""SEAT's per-process ring copies: the same flags as reading the ring every time, whoever wrote
last and across resets, and the ring not read again by the process that wrote it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import redis.asyncio as aioredis

from victim_server.accounting.connection import connect_redis
from victim_server.detection.seat import SeatDetector
from victim_server.detection.seat_ring import RingCopies, ring_copy

RING = 16  # small, so the streams below wrap around it


def _detector(redis: aioredis.Redis) -> SeatDetector:
    detector = SeatDetector(redis)
    assert detector.calibration is not None and detector.model is not None
    detector.calibration = replace(detector.calibration, ring=RING)
    detector.patterns = None  # flags from near copies only: what the copies change
    return detector


def _stream(seed: int, batches: int) -> list[np.ndarray]:
    """Unit vectors around a few centres, so many lie near earlier ones (flags and pairs)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, 64))
    out = []
    for _ in range(batches):
        n = int(rng.integers(1, 5))
        v = centres[rng.integers(0, 4, n)] + 0.05 * rng.normal(size=(n, 64))
        out.append((v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32))
    return out


async def _state(redis: aioredis.Redis, key: str) -> dict[bytes | str, bytes | str]:
    state = await redis.hgetall(f"vs:{{{key}}}:det:seat")
    state.pop(b"ring_id", None)
    state.pop(b"alarm_at", None)  # a time
    return state


async def _fresh(redis: aioredis.Redis, key: str, vectors: np.ndarray) -> None:
    """An update by a detector with no copy: it reads the ring from Redis."""
    await _detector(redis).observe_embeddings(key, vectors)


async def test_processes_taking_turns_reach_what_reading_the_ring_reaches(
    binary_redis: aioredis.Redis, redis_url: str
) -> None:
    other = connect_redis(redis_url, decode=False)
    try:
        a, b = _detector(binary_redis), _detector(other)
        turns = np.random.default_rng(1).integers(0, 2, 60)
        for turn, vectors in zip(turns, _stream(0, 60), strict=True):
            await (a, b)[turn].observe_embeddings("k", vectors)
            await _fresh(binary_redis, "ref", vectors)
        state = await _state(binary_redis, "k")
        assert state == await _state(binary_redis, "ref")
        assert int(state[b"queries"]) > RING and int(state[b"pairs"]) > 0
    finally:
        await other.aclose()


async def test_a_reset_ring_refilled_to_the_same_count_is_not_taken_for_the_copy(
    binary_redis: aioredis.Redis, redis_url: str
) -> None:
    """``a`` holds a copy at n queries; ``b`` resets the key and refills it with n far-away
    clips; ``a``'s next clips, copies of its own earlier ones, must not pair with what its old
    copy held (they would, if the copy were taken for the ring)."""
    other = connect_redis(redis_url, decode=False)
    try:
        a, b = _detector(binary_redis), _detector(other)
        first = _stream(3, 4)
        for vectors in first:
            await a.observe_embeddings("k", vectors)
        far = [-v for v in first]  # the same counts, opposite directions
        await b.reset("k")
        for vectors in far:
            await b.observe_embeddings("k", vectors)
            await _fresh(binary_redis, "ref", vectors)
        again = np.concatenate(first)[:3]
        await a.observe_embeddings("k", again)
        await _fresh(binary_redis, "ref", again)
        state = await _state(binary_redis, "k")
        assert state == await _state(binary_redis, "ref")
        assert int(state[b"queries"]) == sum(len(v) for v in first) + 3
    finally:
        await other.aclose()


async def test_the_writer_does_not_read_the_ring_again(binary_redis: aioredis.Redis) -> None:
    detector = _detector(binary_redis)
    stream = _stream(4, 3)
    await detector.observe_embeddings("k", stream[0])  # no copy yet: reads the ring
    await binary_redis.config_resetstat()
    await detector.observe_embeddings("k", stream[1])
    stats = await binary_redis.info("commandstats")
    assert "cmdstat_get" not in stats and "cmdstat_hmget" not in stats
    assert stats["cmdstat_evalsha"]["calls"] == 1
    await binary_redis.config_resetstat()
    await _fresh(binary_redis, "k", stream[2])  # another process: the ring has moved on
    await binary_redis.config_resetstat()
    await detector.observe_embeddings("k", stream[2])  # refused once, then read and written
    stats = await binary_redis.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] == 2 and stats["cmdstat_get"]["calls"] == 1


def test_copies_are_bounded_and_follow_the_ring_slots() -> None:
    copies = RingCopies(max_keys=2)
    for key in ("a", "b", "c"):
        copies.put(key, ring_copy("id", 0, b"", size=4, dim=2))
    assert copies.get("a") is None and copies.get("c") is not None
    copy = ring_copy("id", 3, np.arange(6, dtype=np.float32).tobytes(), size=4, dim=2)
    assert copy.held().shape == (3, 2)
    moved = copy.advanced(np.full((2, 2), 9.0, np.float32))  # slots 3, then 0 (wraps)
    assert moved.queries == 5 and moved.name == "id:5"
    np.testing.assert_array_equal(moved.vectors[:, 0], [9.0, 2.0, 4.0, 9.0])
