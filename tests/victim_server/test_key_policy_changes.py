"""A key's policies are read back as they are now, never as they were when first parsed."""

from __future__ import annotations

import redis.asyncio as aioredis

from shared.schemas import DefensePolicy, DetectionPolicy, KeyCreate
from victim_server.accounting.keys import KeyStore


async def test_a_changed_policy_is_seen_on_the_next_read(redis_client: aioredis.Redis) -> None:
    store = KeyStore(redis_client)
    created = await store.create(KeyCreate(budget=10, detection=DetectionPolicy(detector="none")))
    assert created is not None
    first = await store.get(created.key_id)
    assert first is not None and first.detection.detector == "none"

    await store.set_policies(
        created.key_id,
        detection=DetectionPolicy(detector="ood", action="block"),
        defenses=DefensePolicy(round_decimals=2),
    )
    again, _ = await store.authenticate(created.api_key)

    assert again is not None
    assert again.detection == DetectionPolicy(detector="ood", action="block")
    assert again.defenses == DefensePolicy(round_decimals=2)
    other = await store.create(KeyCreate(budget=10, detection=DetectionPolicy(detector="none")))
    assert other is not None
    assert (await store.get(other.key_id)).detection.detector == "none"  # type: ignore[union-attr]
