"""The answer cache's Redis client survives a Redis that stalls longer than one timeout."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import TimeoutError as RedisTimeoutError

from attacker.client import ResponseCache
from attacker.client.store import open_store
from vidsteal.processes import RedisProcess, start_redis

STALL_S = 1.5
TIMEOUT_S = 0.5
IDENTITY = hashlib.sha256(b"victim").hexdigest()


def _clip_hash(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of this test's own: it is stopped with SIGSTOP, which no other test sees."""
    server = start_redis(tmp_path / "redis")
    try:
        yield server
    finally:
        _resume(server.process.pid)
        server.stop()


def _resume(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


def _stall(server: RedisProcess, seconds: float) -> threading.Timer:
    os.kill(server.process.pid, signal.SIGSTOP)
    resume = threading.Timer(seconds, _resume, (server.process.pid,))
    resume.start()
    return resume


async def test_paid_answers_are_stored_through_a_stall_longer_than_the_timeout(
    own_redis: RedisProcess,
) -> None:
    store = open_store(own_redis.url, timeout_s=TIMEOUT_S)
    cache = ResponseCache(store, IDENTITY)
    answers = {_clip_hash(i): {"probs": [0.25, 0.75], "index": i} for i in range(50)}
    try:
        await store.ping()
        resume = _stall(own_redis, STALL_S)
        await cache.put_many(answers)  # times out at least twice, then lands
        resume.join()
        assert await cache.get_many(list(answers)) == list(answers.values())
    finally:
        await store.aclose()


async def test_a_client_without_retries_loses_the_same_write(own_redis: RedisProcess) -> None:
    """The control: redis-py's behaviour that ended a long run (one timeout, no retry)."""
    plain = Redis.from_url(
        own_redis.url, decode_responses=True, socket_timeout=TIMEOUT_S, retry=Retry(NoBackoff(), 0)
    )
    cache = ResponseCache(plain, IDENTITY)
    try:
        await plain.ping()
        resume = _stall(own_redis, STALL_S)
        with pytest.raises(RedisTimeoutError):
            await cache.put_many({_clip_hash(0): {"probs": [1.0]}})
        resume.join()
    finally:
        await plain.aclose()
