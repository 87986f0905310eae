"""The victim's Redis pool opens connections without a package-metadata lookup each time."""

from __future__ import annotations

import pytest
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
