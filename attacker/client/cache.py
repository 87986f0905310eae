"""ResponseCache: every paid answer, in Redis, keyed by victim identity + clip content hash.

Lookups and writes are pipelined (one round trip per batch). Entries never expire: a paid
answer is worth keeping, and a rerun of the same run must pay nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio import Redis

from attacker import fastjson
from shared.hashing import cache_key

CACHE_PREFIX = "vsa:answer"


class ResponseCache:
    def __init__(self, redis: Redis, identity: str) -> None:
        self._redis = redis
        self.identity = identity

    def _key(self, clip_hash: str) -> str:
        return f"{CACHE_PREFIX}:{cache_key(self.identity, clip_hash)}"

    async def get_many(self, clip_hashes: Sequence[str]) -> list[dict[str, Any] | None]:
        if not clip_hashes:
            return []
        raw = await self._redis.mget([self._key(h) for h in clip_hashes])
        return [fastjson.loads(value) if value is not None else None for value in raw]

    async def put_many(self, answers: Mapping[str, dict[str, Any]]) -> None:
        if not answers:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for clip_hash, answer in answers.items():
                pipe.set(self._key(clip_hash), json.dumps(answer, separators=(",", ":")))
            await pipe.execute()


class MemoryCache:
    """Same interface, in process memory: for one-off evaluations without Redis."""

    def __init__(self, identity: str) -> None:
        self.identity = identity
        self._answers: dict[str, dict[str, Any]] = {}

    async def get_many(self, clip_hashes: Sequence[str]) -> list[dict[str, Any] | None]:
        return [self._answers.get(h) for h in clip_hashes]

    async def put_many(self, answers: Mapping[str, dict[str, Any]]) -> None:
        self._answers.update(answers)
