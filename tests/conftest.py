"""Fixtures that start real services: redis-server on a free port, uvicorn victims on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).parent))

from helpers.services import (
    ADMIN_TOKEN,
    LiveVictim,
    RedisProcess,
    start_redis,
    start_victim,
)

from victim_server.accounting.connection import connect_redis
from victim_server.app import create_app
from victim_server.settings import Settings


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server)")
    server = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def redis_url(redis_server: RedisProcess) -> AsyncIterator[str]:
    """A clean database on the session's redis-server."""
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushall()
    await client.aclose()
    yield redis_server.url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = connect_redis(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def binary_redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client that returns bytes (detector state is binary)."""
    client = connect_redis(redis_url, decode=False)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def admin_token() -> str:
    return ADMIN_TOKEN


@pytest.fixture
def live_victim(redis_url: str, tmp_path: Path) -> Iterator[LiveVictim]:
    """A real uvicorn victim process on 127.0.0.1 serving the embedded model."""
    victim = start_victim(redis_url, tmp_path / "victim.log")
    try:
        yield victim
    finally:
        victim.stop()


@pytest.fixture(autouse=True, scope="session")
def _quiet_threads() -> None:
    # Tests share 2 cores with the servers they start; one torch thread avoids spin contention.
    os.environ.setdefault("VIDSTEAL_THREADS", "1")
    import torch

    torch.set_num_threads(1)


@pytest.fixture
async def victim_transport(redis_url: str) -> AsyncIterator[httpx.ASGITransport]:
    """The victim app in process (real lifespan, real Redis), reachable through this transport
    at any base URL (tests use http://victim)."""
    # The eager model: these tests exercise the API, and tracing at every app start costs the
    # suite about a minute; the trace is covered by test_tracing.py, test_serving_settings.py
    # and every live (uvicorn) victim, which serve it by default.
    # Nor do they freeze start-up objects (its gc.collect() per app start is suite time).
    settings = Settings(  # type: ignore[call-arg]
        admin_token=ADMIN_TOKEN,
        redis_url=redis_url,
        threads=1,
        trace_model=False,
        freeze_startup_objects=False,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield httpx.ASGITransport(app=app)


@pytest.fixture
async def victim_app(victim_transport: httpx.ASGITransport) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=victim_transport, base_url="http://victim") as client:
        yield client
