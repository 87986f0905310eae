"""The victim's Redis pool: connections open without a package-metadata lookup each time, and a
connect that times out (nothing sent yet) is retried. Real Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.exceptions
import redis.utils

from victim_server.accounting.connection import connect_redis


async def test_new_connections_do_not_look_up_the_client_version(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = connect_redis(redis_url)

    def lookup() -> str:
        raise AssertionError("per-connection package metadata lookup")

    monkeypatch.setattr(redis.utils, "get_lib_version", lookup)
    try:
        connection = client.connection_pool.make_connection()  # what the pool does under load
        await connection.connect()
        await connection.disconnect()
        assert await client.ping()
    finally:
        await client.aclose()


async def test_a_connect_that_times_out_is_retried(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stalled event loop can miss the connect deadline; the command must still run."""
    real_open = asyncio.open_connection
    attempts: list[str] = []

    async def first_connect_stalls(*args: Any, **kwargs: Any) -> Any:
        attempts.append("stalled" if not attempts else "opened")
        if len(attempts) == 1:
            await asyncio.sleep(5)
        return await real_open(*args, **kwargs)

    monkeypatch.setattr(asyncio, "open_connection", first_connect_stalls)
    client = connect_redis(redis_url, timeout_s=0.2)
    try:
        assert await client.set("k", "v")
        assert await client.get("k") == "v"
    finally:
        await client.aclose()
    assert attempts == ["stalled", "opened"]


async def test_a_command_that_times_out_is_not_retried(redis_url: str) -> None:
    """Only the connect is retried: a command past its deadline may still run in Redis."""
    client = connect_redis(redis_url, timeout_s=0.2)
    try:
        await client.config_resetstat()
        with pytest.raises(redis.exceptions.TimeoutError):
            await client.blpop(["an-empty-list"], timeout=1)  # Redis holds the reply for 1 s
        stats = await client.info("commandstats")
        assert stats["cmdstat_blpop"]["calls"] == 1
    finally:
        await client.aclose()
