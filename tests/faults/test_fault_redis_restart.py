"""redis-server restarts under a running victim (issue 13.5): pooled connections go stale, and
the next requests must still be answered (connection errors are retried; every command is
idempotent), with the spend exact."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from helpers.services import ADMIN_TOKEN, RedisProcess, start_redis
from helpers.victim import budget_of, clips, create_key, npy_request

from victim_server.accounting.connection import connect_redis
from victim_server.accounting.keys import KeyStore
from victim_server.app import create_app
from victim_server.settings import Settings


@pytest.fixture
def own_redis(tmp_path: Path) -> RedisProcess:
    return start_redis(tmp_path / "redis", appendonly=True)


async def _restart(server: RedisProcess) -> RedisProcess:
    server.stop()  # SIGTERM: the AOF is flushed, every client connection is dropped
    return await asyncio.to_thread(start_redis, server.data_dir, port=server.port, appendonly=True)


@pytest.fixture
async def victim_on_own_redis(own_redis: RedisProcess) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        admin_token=ADMIN_TOKEN,  # type: ignore[arg-type]
        redis_url=own_redis.url,
        threads=1,
        max_wait_ms=20,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://victim") as client:
            yield client


async def test_requests_after_a_redis_restart_do_not_fail_on_stale_connections(
    own_redis: RedisProcess, victim_on_own_redis: httpx.AsyncClient
) -> None:
    client = victim_on_own_redis
    key = await create_key(client, budget=1000)
    batch = clips(1)

    async def burst() -> list[int]:
        responses = await asyncio.gather(
            *[client.post("/v1/classify", **npy_request(batch, key["api_key"])) for _ in range(40)]
        )
        return [r.status_code for r in responses]

    assert await burst() == [200] * 40  # the pool now holds many connections
    server = await _restart(own_redis)
    try:
        statuses = await burst()
        assert statuses == [200] * 40, f"{statuses.count(503)} of 40 failed after the restart"
        assert (await budget_of(client, key["api_key"]))["spent"] == 80
    finally:
        server.stop()


async def test_key_creation_and_top_up_are_safe_to_retry(redis_url: str) -> None:
    """What makes retrying connection errors safe: a second run of the same operation changes
    nothing more."""
    redis: aioredis.Redis = connect_redis(redis_url)
    try:
        store = KeyStore(redis)
        from shared.schemas import KeyCreate

        api_key = "vsk_fixedid_" + "s" * 32
        first = await store.create(KeyCreate(budget=5), api_key=api_key)
        assert first is not None
        assert await store.create(KeyCreate(budget=5), api_key=api_key) is None  # seen again
        await store.top_up(first.key_id, 10, operation_id="op1")
        again = await store.top_up(first.key_id, 10, operation_id="op1")  # a retried call
        assert again is not None and again.budget == 15
        other = await store.top_up(first.key_id, 10, operation_id="op2")
        assert other is not None and other.budget == 25
        assert await store.top_up("missing", 10) is None
    finally:
        await redis.aclose()
