"""The attacker's Redis client: the answer cache must outlast a slow Redis.

redis-py gives every command a 5 s socket timeout. On a loaded machine (a long run beside other
jobs on two cores) a reply can take longer than that, and a timeout while storing paid answers
ended the run (seen twice in a data-free run at load 10-12). The attacker only sends idempotent
commands (``MGET`` and ``SET`` of content-addressed keys), so a timed-out or dropped command is
safely sent again: the client waits longer and retries with backoff.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["STORE_RETRIES", "STORE_TIMEOUT_S", "open_store"]

STORE_TIMEOUT_S = 30.0
STORE_RETRIES = 5


def open_store(
    url: str, *, timeout_s: float = STORE_TIMEOUT_S, retries: int = STORE_RETRIES
) -> Redis:
    """A ``decode_responses`` client for the answer cache at ``url``."""
    return Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(
            ExponentialBackoff(cap=2.0, base=0.1),
            retries,
            supported_errors=(RedisConnectionError, RedisTimeoutError),
        ),
    )
