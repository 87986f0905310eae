"""The Lua ledger against a real redis-server: exact under concurrency, idempotent, refundable."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from faults.stall_proxy import StallProxy
from redis.exceptions import TimeoutError as RedisTimeout

from shared.schemas import DefensePolicy, KeyCreate
from victim_server.accounting.connection import connect_redis
from victim_server.accounting.keys import KeyStore
from victim_server.accounting.ledger import Ledger, ReserveStatus


async def _key(redis: aioredis.Redis, budget: int) -> str:
    return (await KeyStore(redis).create(KeyCreate(budget=budget))).key_id


async def test_concurrent_reservations_stop_exactly_at_the_budget(
    redis_client: aioredis.Redis,
) -> None:
    key_id = await _key(redis_client, 137)
    ledger = Ledger(redis_client)
    results = await asyncio.gather(
        *[
            ledger.reserve(key_id, 1, idempotency_key=None, fingerprint="", request_id=str(i))
            for i in range(500)
        ]
    )
    statuses = [r.status for r in results]
    assert statuses.count(ReserveStatus.OK) == 137
    assert statuses.count(ReserveStatus.EXHAUSTED) == 363
    key = await KeyStore(redis_client).get(key_id)
    assert key is not None and key.spent == 137 and key.remaining == 0


async def test_whole_request_is_rejected_when_it_does_not_fit(redis_client: aioredis.Redis) -> None:
    key_id = await _key(redis_client, 10)
    ledger = Ledger(redis_client)
    first = await ledger.reserve(key_id, 7, idempotency_key=None, fingerprint="", request_id="a")
    second = await ledger.reserve(key_id, 4, idempotency_key=None, fingerprint="", request_id="b")
    assert first.status is ReserveStatus.OK and first.remaining == 3
    assert second.status is ReserveStatus.EXHAUSTED and second.spent == 7


async def test_idempotency_replays_once_committed(redis_client: aioredis.Redis) -> None:
    key_id = await _key(redis_client, 10)
    ledger = Ledger(redis_client)
    first = await ledger.reserve(key_id, 3, idempotency_key="k1", fingerprint="f", request_id="a")
    in_flight = await ledger.reserve(
        key_id, 3, idempotency_key="k1", fingerprint="f", request_id="b"
    )
    assert first.status is ReserveStatus.OK
    assert in_flight.status is ReserveStatus.IN_PROGRESS and in_flight.spent == 3
    await ledger.commit(key_id, idempotency_key="k1", fingerprint="f", response_json='{"x": 1}')
    replay = await ledger.reserve(key_id, 3, idempotency_key="k1", fingerprint="f", request_id="c")
    assert replay.status is ReserveStatus.REPLAY and replay.stored_response == '{"x": 1}'
    assert replay.spent == 3
    other = await ledger.reserve(key_id, 3, idempotency_key="k1", fingerprint="g", request_id="d")
    assert other.status is ReserveStatus.MISMATCH


async def test_refund_gives_back_and_forgets_the_idempotency_record(
    redis_client: aioredis.Redis,
) -> None:
    key_id = await _key(redis_client, 5)
    ledger = Ledger(redis_client)
    await ledger.reserve(key_id, 5, idempotency_key="k", fingerprint="f", request_id="a")
    released = await ledger.release(key_id, request_id="a", idempotency_key="k")
    assert released.refunded == 5 and released.spent == 0
    again = await ledger.reserve(key_id, 5, idempotency_key="k", fingerprint="f", request_id="b")
    assert again.status is ReserveStatus.OK and again.spent == 5


async def test_unknown_and_revoked_keys(redis_client: aioredis.Redis) -> None:
    ledger = Ledger(redis_client)
    unknown = await ledger.reserve("nope", 1, idempotency_key=None, fingerprint="", request_id="")
    assert unknown.status is ReserveStatus.UNKNOWN
    key_id = await _key(redis_client, 5)
    await KeyStore(redis_client).revoke(key_id)
    revoked = await ledger.reserve(key_id, 1, idempotency_key=None, fingerprint="", request_id="")
    assert revoked.status is ReserveStatus.REVOKED and revoked.spent == 0


async def test_all_keys_of_one_api_key_share_a_hash_tag(redis_client: aioredis.Redis) -> None:
    key_id = await _key(redis_client, 5)
    await Ledger(redis_client).reserve(
        key_id, 1, idempotency_key="i", fingerprint="f", request_id="r"
    )
    names = [name async for name in redis_client.scan_iter(match=f"*{key_id}*")]
    assert len(names) == 3 and all(f"{{{key_id}}}" in name for name in names)


async def test_secrets_are_stored_hashed(redis_client: aioredis.Redis) -> None:
    store = KeyStore(redis_client)
    created = await store.create(KeyCreate(budget=1))
    secret = created.api_key.split("_", 2)[2]
    dump = await redis_client.hgetall(f"vs:{{{created.key_id}}}:key")
    assert secret not in str(dump)
    assert (await store.authenticate(created.api_key))[0] is not None
    assert (await store.authenticate(created.api_key + "x"))[0] is None
    assert (await store.authenticate("garbage"))[0] is None


async def test_an_abandoned_request_is_taken_over_without_a_second_charge(
    redis_client: aioredis.Redis,
) -> None:
    key_id = await _key(redis_client, 10)
    ledger = Ledger(redis_client, abandoned_after_s=0.2)
    first = await ledger.reserve(key_id, 4, idempotency_key="k", fingerprint="f", request_id="a")
    assert first.status is ReserveStatus.OK
    soon = await ledger.reserve(key_id, 4, idempotency_key="k", fingerprint="f", request_id="b")
    assert soon.status is ReserveStatus.IN_PROGRESS
    await asyncio.sleep(0.3)  # the first request's process "died"
    later = await ledger.reserve(key_id, 4, idempotency_key="k", fingerprint="f", request_id="c")
    assert later.status is ReserveStatus.TAKEOVER and later.spent == 4
    await ledger.commit(key_id, idempotency_key="k", fingerprint="f", response_json="{}")
    replay = await ledger.reserve(key_id, 4, idempotency_key="k", fingerprint="f", request_id="d")
    assert replay.status is ReserveStatus.REPLAY and replay.spent == 4


async def test_a_reserve_that_timed_out_after_charging_is_released_by_its_request_id(
    redis_client: aioredis.Redis, redis_server: object
) -> None:
    """Redis runs the reserve but its reply comes after the client's timeout (issue 13.1)."""
    key_id = await _key(redis_client, 10)
    proxy = await StallProxy(redis_server.port).start()  # type: ignore[attr-defined]
    slow = connect_redis(proxy.url, timeout_s=0.3)
    try:
        await slow.ping()
        proxy.delay_replies(1.0, count=1)
        with pytest.raises(RedisTimeout):
            await Ledger(slow).reserve(
                key_id, 3, idempotency_key="k", fingerprint="f", request_id="r1"
            )
    finally:
        await slow.aclose()
        await proxy.stop()
    ledger = Ledger(redis_client)
    assert (await KeyStore(redis_client).get(key_id)).spent == 3  # it did charge
    released = await ledger.release(key_id, request_id="r1", idempotency_key="k")
    assert (released.previous_state, released.refunded, released.spent) == ("held", 3, 0)
    again = await ledger.release(key_id, request_id="r1", idempotency_key="k")
    assert again.refunded == 0 and again.spent == 0  # releasing twice gives back once
    fresh = await ledger.reserve(key_id, 3, idempotency_key="k", fingerprint="f", request_id="r2")
    assert fresh.status is ReserveStatus.OK and fresh.spent == 3  # not 'in progress'


async def test_a_release_before_the_reserve_runs_keeps_it_from_charging(
    redis_client: aioredis.Redis,
) -> None:
    key_id = await _key(redis_client, 10)
    ledger = Ledger(redis_client)
    released = await ledger.release(key_id, request_id="late", idempotency_key=None)
    assert released.previous_state == "none" and released.refunded == 0
    late = await ledger.reserve(key_id, 4, idempotency_key=None, fingerprint="", request_id="late")
    assert late.status is ReserveStatus.VOID and late.spent == 0
    assert (await KeyStore(redis_client).get(key_id)).spent == 0


async def test_a_retried_reserve_of_one_request_charges_once(redis_client: aioredis.Redis) -> None:
    key_id = await _key(redis_client, 10)
    ledger = Ledger(redis_client)
    first = await ledger.reserve(key_id, 4, idempotency_key=None, fingerprint="", request_id="x")
    retried = await ledger.reserve(key_id, 4, idempotency_key=None, fingerprint="", request_id="x")
    assert first.status is retried.status is ReserveStatus.OK
    assert retried.spent == 4


async def test_a_committed_request_is_not_released(redis_client: aioredis.Redis) -> None:
    key_id = await _key(redis_client, 10)
    ledger = Ledger(redis_client)
    await ledger.reserve(key_id, 2, idempotency_key="k", fingerprint="f", request_id="c")
    await ledger.commit(
        key_id, idempotency_key="k", fingerprint="f", response_json="{}", request_id="c"
    )
    released = await ledger.release(key_id, request_id="c", idempotency_key="k")
    assert released.previous_state == "committed" and released.spent == 2


async def test_releasing_a_takeover_gives_nothing_back_and_hands_the_charge_on(
    redis_client: aioredis.Redis,
) -> None:
    key_id = await _key(redis_client, 10)
    ledger = Ledger(redis_client, abandoned_after_s=0.1)
    await ledger.reserve(key_id, 4, idempotency_key="k", fingerprint="f", request_id="a")
    await asyncio.sleep(0.2)
    took = await ledger.reserve(key_id, 4, idempotency_key="k", fingerprint="f", request_id="b")
    assert took.status is ReserveStatus.TAKEOVER
    released = await ledger.release(key_id, request_id="b", idempotency_key="k")
    assert released.refunded == 0 and released.spent == 4
    ledger_slow = Ledger(redis_client, abandoned_after_s=60)  # no wait for the next retry
    next_try = await ledger_slow.reserve(
        key_id, 4, idempotency_key="k", fingerprint="f", request_id="c"
    )
    assert next_try.status is ReserveStatus.TAKEOVER and next_try.spent == 4


async def test_a_reserve_with_a_stale_copy_of_the_key_charges_nothing(
    redis_client: aioredis.Redis,
) -> None:
    """A per-process copy of the key record older than a policy change or a revocation is
    refused by the script itself, so the copy can never charge under an old policy."""
    store = KeyStore(redis_client)
    key_id = await _key(redis_client, 10)
    copy = await store.get(key_id)
    assert copy is not None
    ledger = Ledger(redis_client)
    ok = await ledger.reserve(
        key_id, 1, idempotency_key=None, fingerprint="", request_id="a", revision=copy.revision
    )
    assert ok.status is ReserveStatus.OK
    changed = await store.set_policies(key_id, defenses=DefensePolicy(round_decimals=2))
    assert changed is not None and changed.revision != copy.revision
    stale = await ledger.reserve(
        key_id, 1, idempotency_key=None, fingerprint="", request_id="b", revision=copy.revision
    )
    assert stale.status is ReserveStatus.STALE and stale.spent == 1
    fresh = await ledger.reserve(
        key_id, 1, idempotency_key=None, fingerprint="", request_id="b", revision=changed.revision
    )
    assert fresh.status is ReserveStatus.OK and fresh.spent == 2
    revoked = await store.revoke(key_id)
    assert revoked is not None and revoked.revision != changed.revision
    late = await ledger.reserve(
        key_id, 1, idempotency_key=None, fingerprint="", request_id="c", revision=changed.revision
    )
    assert late.status is ReserveStatus.STALE and late.spent == 2


async def test_commits_made_together_are_each_replayed(redis_client: aioredis.Redis) -> None:
    """Commits of one key in the same loop turn go to Redis as one script call."""
    key_id = await _key(redis_client, 10)
    ledger = Ledger(redis_client)
    for i in range(5):
        await ledger.reserve(
            key_id, 1, idempotency_key=f"k{i}", fingerprint="f", request_id=f"r{i}"
        )
    await asyncio.gather(
        *[
            ledger.commit(
                key_id,
                idempotency_key=f"k{i}",
                fingerprint="f",
                response_json=f'{{"i": {i}}}',
                request_id=f"r{i}",
            )
            for i in range(5)
        ]
    )
    for i in range(5):
        replay = await ledger.reserve(
            key_id, 1, idempotency_key=f"k{i}", fingerprint="f", request_id=f"s{i}"
        )
        assert replay.status is ReserveStatus.REPLAY and replay.stored_response == f'{{"i": {i}}}'
        released = await ledger.release(key_id, request_id=f"r{i}", idempotency_key=f"k{i}")
        assert released.previous_state == "committed" and released.refunded == 0
    assert (await KeyStore(redis_client).get(key_id)).spent == 5  # type: ignore[union-attr]
