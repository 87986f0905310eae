"""Redis answers late (a held reply, past ``redis_timeout_s``): what the client is told about
its charge must be true, and nothing may stay charged for an answer that was not given."""

from __future__ import annotations

import asyncio
import hashlib

import redis.asyncio as aioredis
from helpers.victim import budget_of, clips, create_key, npy_request

from faults.conftest import StalledVictim
from victim_server.accounting import lua


def _sha(script: str) -> bytes:
    return hashlib.sha1(script.encode()).hexdigest().encode()


async def _spent(redis_url: str, key_id: str) -> int:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return int(await client.hget(f"vs:{{{key_id}}}:key", "spent") or 0)
    finally:
        await client.aclose()


async def _warm(victim: StalledVictim, api_key: str) -> None:
    """One answered request, so the Lua scripts are loaded (EVALSHA carries their SHA-1)."""
    response = await victim.client.post("/v1/classify", **npy_request(clips(1), api_key))
    assert response.status_code == 200, response.text


async def test_a_reserve_answered_late_is_given_back_and_the_503_says_so(
    stalled_victim: StalledVictim, redis_url: str
) -> None:
    key = await create_key(stalled_victim.client, budget=10)
    await _warm(stalled_victim, key["api_key"])
    stalled_victim.proxy.delay_replies_to(_sha(lua.RESERVE), 1.0, count=1)
    response = await stalled_victim.client.post(
        "/v1/classify", **npy_request(clips(2, start=5), key["api_key"], **{"Idempotency-Key": "a"})
    )
    assert response.status_code == 503, response.text
    problem = response.json()
    assert problem["type"] == "urn:vidsteal:problem:accounting-unavailable"
    assert problem["charge"] == "refunded"
    assert await _spent(redis_url, key["key_id"]) == 1  # only the warm-up clip
    # The retry is a fresh request: charged once, answered.
    await asyncio.sleep(1.0)  # the held reply drains
    retry = await stalled_victim.client.post(
        "/v1/classify", **npy_request(clips(2, start=5), key["api_key"], **{"Idempotency-Key": "a"})
    )
    assert retry.status_code == 200, retry.text
    assert (await budget_of(stalled_victim.client, key["api_key"]))["spent"] == 3


async def test_when_redis_stays_slow_the_charge_is_unknown_then_given_back(
    stalled_victim: StalledVictim, redis_url: str
) -> None:
    key = await create_key(stalled_victim.client, budget=10)
    await _warm(stalled_victim, key["api_key"])
    stalled_victim.proxy.delay_replies_to(_sha(lua.RESERVE), 1.0, count=1)
    stalled_victim.proxy.delay_replies_to(_sha(lua.RELEASE), 1.0, count=2)  # both tries now
    response = await stalled_victim.client.post(
        "/v1/classify", **npy_request(clips(3, start=10), key["api_key"])
    )
    assert response.status_code == 503, response.text
    problem = response.json()
    assert problem["charge"] == "unknown"
    assert "not charged" not in problem["detail"]
    assert "nothing was charged" not in problem["detail"]
    for _ in range(50):  # background releases land once Redis answers in time again
        if await _spent(redis_url, key["key_id"]) == 1:
            break
        await asyncio.sleep(0.1)
    assert await _spent(redis_url, key["key_id"]) == 1


async def test_a_commit_answered_late_still_delivers_the_paid_answer_once(
    stalled_victim: StalledVictim, redis_url: str
) -> None:
    key = await create_key(stalled_victim.client, budget=10)
    await _warm(stalled_victim, key["api_key"])
    stalled_victim.proxy.delay_replies_to(_sha(lua.COMMIT), 1.0, count=1)
    request = npy_request(clips(2, start=20), key["api_key"], **{"Idempotency-Key": "c"})
    response = await stalled_victim.client.post("/v1/classify", **request)
    assert response.status_code == 200, response.text
    assert response.json()["budget"]["spent"] == 3
    await asyncio.sleep(1.0)
    again = await stalled_victim.client.post("/v1/classify", **request)
    assert again.status_code == 200 and again.json()["replayed"] is True
    assert await _spent(redis_url, key["key_id"]) == 3
