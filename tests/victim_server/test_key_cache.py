"""KeyCache: a per-process copy of key records, never an authority over a wrong secret."""

from __future__ import annotations

import redis.asyncio as aioredis

from shared.schemas import DefensePolicy, KeyCreate
from victim_server.accounting.key_cache import KeyCache
from victim_server.accounting.keys import KeyStore


async def test_copies_are_served_until_refreshed_and_wrong_secrets_are_refused(
    redis_client: aioredis.Redis,
) -> None:
    store = KeyStore(redis_client)
    created = await store.create(KeyCreate(budget=3))
    assert created is not None
    cache = KeyCache(store, ttl_s=60)
    first = await cache.authenticate(created.api_key)
    assert first is not None and first.revision == 0
    await store.set_policies(created.key_id, defenses=DefensePolicy(round_decimals=2))
    assert await cache.authenticate(created.api_key) is first  # the copy, no Redis read
    assert await cache.authenticate(created.api_key[:-1] + "x") is None
    fresh = await cache.refresh(created.api_key)
    assert fresh is not None and fresh.revision == 1 and fresh.defenses.round_decimals == 2
    assert await cache.authenticate(created.api_key) is fresh
    cache.spent(created.key_id, budget=3, spent=3)
    spent = await cache.authenticate(created.api_key)
    assert spent is not None and spent.remaining == 0


async def test_an_expired_copy_is_read_again(redis_client: aioredis.Redis) -> None:
    store = KeyStore(redis_client)
    created = await store.create(KeyCreate(budget=3))
    assert created is not None
    cache = KeyCache(store, ttl_s=0.0)
    first = await cache.authenticate(created.api_key)
    await store.revoke(created.key_id)
    again = await cache.authenticate(created.api_key)
    assert first is not None and again is not None and again.revoked and not first.revoked
