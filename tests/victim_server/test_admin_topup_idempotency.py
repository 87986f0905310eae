"""Admin top-up with an Idempotency-Key (issue 13): a retried top-up adds once, the same key with
another amount is refused as a problem, and the OpenAPI document says so. Real Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import redis.asyncio as aioredis
from helpers.victim import ADMIN_HEADERS, create_key

from victim_server.accounting.keys import KeyStore, TopUpStatus

PROBLEM = "application/problem+json"


async def _top_up(
    client: httpx.AsyncClient, key_id: str, amount: int, idempotency_key: str | None
) -> httpx.Response:
    headers = dict(ADMIN_HEADERS)
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return await client.post(
        f"/admin/keys/{key_id}/topup", json={"amount": amount}, headers=headers
    )


async def _budget(client: httpx.AsyncClient, key_id: str) -> int:
    response = await client.get(f"/admin/keys/{key_id}", headers=ADMIN_HEADERS)
    assert response.status_code == 200, response.text
    budget: int = response.json()["budget"]
    return budget


async def test_a_retried_top_up_adds_once(victim_app: httpx.AsyncClient) -> None:
    key = await create_key(victim_app, budget=10)
    first = await _top_up(victim_app, key["key_id"], 5, "topup-2026-12-01")
    assert first.status_code == 200, first.text
    assert first.json()["budget"] == 15 and "idempotent-replayed" not in first.headers
    again = await _top_up(victim_app, key["key_id"], 5, "topup-2026-12-01")
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["budget"] == 15
    assert await _budget(victim_app, key["key_id"]) == 15


async def test_the_same_key_with_another_amount_is_a_problem(
    victim_app: httpx.AsyncClient,
) -> None:
    key = await create_key(victim_app, budget=10)
    assert (await _top_up(victim_app, key["key_id"], 5, "k1")).status_code == 200
    other = await _top_up(victim_app, key["key_id"], 6, "k1")
    assert other.status_code == 422
    assert other.headers["content-type"] == PROBLEM
    assert other.json()["type"] == "urn:vidsteal:problem:validation-error"
    assert "different amount" in other.json()["detail"]
    assert await _budget(victim_app, key["key_id"]) == 15


async def test_concurrent_retries_add_once_and_other_keys_each_add(
    victim_app: httpx.AsyncClient,
) -> None:
    key = await create_key(victim_app, budget=0)
    same = await asyncio.gather(
        *[_top_up(victim_app, key["key_id"], 7, "burst") for _ in range(20)]
    )
    assert [r.status_code for r in same] == [200] * 20
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in same) == 19
    assert await _budget(victim_app, key["key_id"]) == 7
    for idem in ("a", "b", None, None):
        assert (await _top_up(victim_app, key["key_id"], 1, idem)).status_code == 200
    assert await _budget(victim_app, key["key_id"]) == 11  # two new keys, two without a key


async def test_an_idempotency_key_belongs_to_one_api_key(victim_app: httpx.AsyncClient) -> None:
    alice = await create_key(victim_app, budget=1, name="alice")
    bob = await create_key(victim_app, budget=1, name="bob")
    assert (await _top_up(victim_app, alice["key_id"], 3, "monthly")).status_code == 200
    bobs = await _top_up(victim_app, bob["key_id"], 4, "monthly")
    assert bobs.status_code == 200 and "idempotent-replayed" not in bobs.headers
    assert await _budget(victim_app, alice["key_id"]) == 4
    assert await _budget(victim_app, bob["key_id"]) == 5


async def test_an_unknown_or_revoked_key_adds_nothing_and_records_nothing(
    victim_app: httpx.AsyncClient, redis_client: aioredis.Redis
) -> None:
    assert (await _top_up(victim_app, "nope", 3, "x")).status_code == 404
    key = await create_key(victim_app, budget=2)
    await victim_app.delete(f"/admin/keys/{key['key_id']}", headers=ADMIN_HEADERS)
    assert (await _top_up(victim_app, key["key_id"], 3, "x")).status_code == 404
    assert [k async for k in redis_client.scan_iter("vs:*:op:*")] == []


async def test_key_store_statuses(redis_client: aioredis.Redis) -> None:
    from shared.schemas import KeyCreate

    store = KeyStore(redis_client, operation_ttl_s=60)
    created = await store.create(KeyCreate(budget=1, name="s"))
    assert created is not None
    added = await store.top_up_once(created.key_id, 2, operation_id="op")
    assert added[0] is TopUpStatus.ADDED and added[1] is not None and added[1].budget == 3
    replayed = await store.top_up_once(created.key_id, 2, operation_id="op")
    assert replayed[0] is TopUpStatus.REPLAYED and replayed[1] is not None
    assert replayed[1].budget == 3
    mismatch = await store.top_up_once(created.key_id, 9, operation_id="op")
    assert mismatch[0] is TopUpStatus.MISMATCH
    assert (await store.top_up_once("missing", 2, operation_id="op"))[0] is (
        TopUpStatus.UNKNOWN_KEY
    )
    ttl = await redis_client.ttl(f"vs:{{{created.key_id}}}:op:op")
    assert 0 < ttl <= 60


async def test_the_header_and_its_answers_are_documented(victim_app: httpx.AsyncClient) -> None:
    spec: dict[str, Any] = (await victim_app.get("/openapi.json")).json()
    operation = spec["paths"]["/admin/keys/{key_id}/topup"]["post"]
    headers = [p for p in operation["parameters"] if p["in"] == "header"]
    assert [p["name"] for p in headers] == ["Idempotency-Key"]
    assert headers[0]["required"] is False and "add once" in headers[0]["description"]
    assert "Idempotent-Replayed" in operation["responses"]["200"]["headers"]
    for status in ("400", "401", "404", "422"):
        assert list(operation["responses"][status]["content"]) == [PROBLEM], status
