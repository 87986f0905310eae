"""The Redis client the victim uses: a blocking pool, so bursts wait for a connection."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis


def connect_redis(
    url: str, *, timeout_s: float = 2.0, max_connections: int = 64, decode: bool = True
) -> Redis:
    """Text replies by default; ``decode=False`` for binary values (detector state)."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s,  # waiting for a free connection
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        decode_responses=decode,
    )
    return Redis(connection_pool=pool)
