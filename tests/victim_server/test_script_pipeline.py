"""Script calls of one loop turn share one round trip to a real Redis (ScriptPipeline), and a
paid classify request with an Idempotency-Key and the OOD monitor costs two: the reserve, then
the detector update and the commit together."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from helpers.victim import ADMIN_HEADERS, clips, create_key, npy_request
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from victim_server.script_pipeline import ScriptPipeline

ECHO = "return {KEYS[1], ARGV[1]}"
INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
FAIL = "return redis.error_reply('refused ' .. ARGV[1])"


async def _reads(redis: Redis) -> int:
    """Requests redis-server has read from its sockets so far (this INFO's own read included)."""
    return int((await redis.info("stats"))["total_reads_processed"])


async def test_calls_of_one_loop_turn_go_in_one_round_trip_each_with_its_own_reply(
    redis_client: Redis,
) -> None:
    pipeline = ScriptPipeline(redis_client)
    echo, incr = pipeline.register(ECHO), pipeline.register(INCR)
    for text in (ECHO, INCR):
        await redis_client.script_load(text)
    before = await _reads(redis_client)
    replies = await asyncio.gather(
        echo(keys=["a"], args=["1"]),
        incr(keys=["counter"], args=[5]),
        echo(keys=["b"], args=["2"]),
        incr(keys=["counter"], args=[2]),
    )
    after = await _reads(redis_client)
    assert replies == [["a", "1"], 5, ["b", "2"], 7]  # in call order, each its own
    assert pipeline.round_trips == 1
    assert after - before == 2  # the pipeline's one read + this INFO's
    assert await echo(keys=["c"], args=["3"]) == ["c", "3"]  # a later turn: a round trip more
    assert pipeline.round_trips == 2


async def test_a_failing_script_fails_only_its_own_caller(redis_client: Redis) -> None:
    pipeline = ScriptPipeline(redis_client)
    echo, fail = pipeline.register(ECHO), pipeline.register(FAIL)
    ok, refused = await asyncio.gather(
        echo(keys=["a"], args=["1"]), fail(keys=["x"], args=["this"]), return_exceptions=True
    )
    assert ok == ["a", "1"]
    assert isinstance(refused, ResponseError) and "refused this" in str(refused)


@pytest.mark.parametrize("calls", [1, 3])
async def test_scripts_redis_forgot_are_loaded_again(redis_client: Redis, calls: int) -> None:
    pipeline = ScriptPipeline(redis_client)
    incr = pipeline.register(INCR)
    assert await incr(keys=["n"], args=[1]) == 1
    await redis_client.script_flush()  # as after a Redis restart
    replies = await asyncio.gather(*[incr(keys=["n"], args=[1]) for _ in range(calls)])
    assert sorted(replies) == list(range(2, 2 + calls))


async def test_a_caller_cancelled_meanwhile_does_not_cancel_the_others(
    redis_client: Redis,
) -> None:
    pipeline = ScriptPipeline(redis_client)
    incr = pipeline.register(INCR)
    gone = asyncio.ensure_future(incr(keys=["m"], args=[10]))
    stays = asyncio.ensure_future(incr(keys=["m"], args=[1]))
    await asyncio.sleep(0)  # both submitted in this turn
    gone.cancel()
    assert await stays in (1, 11)
    await asyncio.sleep(0.05)
    assert int(await redis_client.get("m")) == 11  # the cancelled caller's script still ran


async def test_a_paid_request_with_idempotency_and_ood_costs_two_round_trips(
    victim_app: httpx.AsyncClient, redis_client: Redis
) -> None:
    key = await create_key(victim_app, budget=20, detection={"detector": "ood"})
    warm = npy_request(clips(2), key["api_key"], **{"Idempotency-Key": "warm"})
    assert (await victim_app.post("/v1/classify", **warm)).status_code == 200
    scripts_before = (await redis_client.info("commandstats"))["cmdstat_evalsha"]["calls"]
    before = await _reads(redis_client)
    request = npy_request(clips(2, start=4), key["api_key"], **{"Idempotency-Key": "one"})
    response = await victim_app.post("/v1/classify", **request)
    after = await _reads(redis_client)
    scripts_after = (await redis_client.info("commandstats"))["cmdstat_evalsha"]["calls"]
    assert response.status_code == 200, response.text
    assert response.json()["budget"]["spent"] == 4
    assert scripts_after - scripts_before == 3  # reserve, OOD update, commit
    assert after - before == 3  # two round trips + this INFO
    replay = await victim_app.post("/v1/classify", **request)
    assert replay.json()["replayed"] is True  # the commit landed
    status = await victim_app.get(f"/admin/keys/{key['key_id']}/detection", headers=ADMIN_HEADERS)
    assert status.json()["queries"] == 4  # and so did the detector update
