"""Fault fixtures: the victim app in process with its Redis behind a stalling proxy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from helpers.services import ADMIN_TOKEN, RedisProcess

from faults.stall_proxy import StallProxy
from victim_server.app import create_app
from victim_server.settings import Settings


@dataclass
class StalledVictim:
    client: httpx.AsyncClient
    proxy: StallProxy
    app: object


@pytest.fixture
async def stalled_victim(
    redis_url: str, redis_server: RedisProcess
) -> AsyncIterator[StalledVictim]:
    """The victim app (real lifespan) whose Redis connections pass through a StallProxy; the
    Redis timeout is 0.3 s so a held reply times out quickly."""
    proxy = await StallProxy(redis_server.port).start()
    settings = Settings(
        admin_token=ADMIN_TOKEN,  # type: ignore[arg-type]
        redis_url=proxy.url,
        redis_timeout_s=0.3,
        threads=1,
        trace_model=False,  # as tests/conftest.py's in-process victim
        freeze_startup_objects=False,
    )
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://victim") as client:
                yield StalledVictim(client=client, proxy=proxy, app=app)
    finally:
        await proxy.stop()
