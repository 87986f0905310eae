"""Spending the budget against the real victim app (in process) and real Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis.asyncio as aioredis
from helpers.victim import ADMIN_HEADERS, budget_of, create_key

from attacker.client import ResponseCache, RetryPolicy, VictimClient, answer_identity
from attacker.collect import Collector
from attacker.data import TransferManifest, TransferSet, TransferSetWriter
from attacker.sources import ClipShape, build_source
from shared.problems import PROBLEM_CONTENT_TYPE, ProblemType, make_problem
from shared.synthactions import SynthActions
from shared.video import encode_mp4

SHAPE = ClipShape(16, 32, 32)


async def _collect(
    transport: httpx.AsyncBaseTransport,
    redis: aioredis.Redis,
    api_key: str,
    root: Path,
    *,
    target: int,
    allowance: int | None = None,
    source: dict[str, Any] | None = None,
    batch: int = 16,
    sleeps: list[float] | None = None,
    retry: RetryPolicy | None = None,
    concurrency: int = 3,
) -> tuple[Any, TransferSet]:
    async def no_sleep(seconds: float) -> None:
        if sleeps is not None:
            sleeps.append(seconds)

    async with VictimClient(
        "http://victim",
        api_key,
        transport=transport,
        sleep=no_sleep,
        retry=retry or RetryPolicy(max_attempts=6),
    ) as client:
        info = await client.model_info()
        identity = answer_identity("http://victim", info)
        manifest = TransferManifest(
            victim={"identity": identity},
            output=info.output.value,
            labels=info.labels,
            clip_shape=[16, 32, 32, 3],
        )
        with TransferSetWriter(root, manifest) as writer:
            collector = Collector(
                client=client,
                cache=ResponseCache(redis, identity),
                writer=writer,
                target_clips=target,
                paid_allowance=target if allowance is None else allowance,
                batch_clips=batch,
                concurrency=concurrency,
            )
            config = source or {"kind": "noise"}
            stats = await collector.run(iter(build_source(config, shape=SHAPE, seed=0)))
    return stats, TransferSet(root)


async def test_spends_exactly_the_budget_and_a_rerun_pays_nothing(
    victim_transport: httpx.ASGITransport,
    victim_app: httpx.AsyncClient,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    key = await create_key(victim_app, budget=1000)
    stats, transfer = await _collect(
        victim_transport, redis_client, key["api_key"], tmp_path / "a", target=101
    )
    assert stats.paid == 101 and stats.clips == 101 and len(transfer) == 101
    assert (await budget_of(victim_app, key["api_key"]))["spent"] == 101
    again, second = await _collect(
        victim_transport, redis_client, key["api_key"], tmp_path / "b", target=101
    )
    assert again.paid == 0 and again.cache_hits == 101 and again.requests == 0
    assert (await budget_of(victim_app, key["api_key"]))["spent"] == 101
    assert [r.clip_hash for r in second.records] == [r.clip_hash for r in transfer.records]
    assert [r.result for r in second.records] == [r.result for r in transfer.records]


async def test_answers_paid_by_a_defended_key_are_not_reused_by_another_key(
    victim_transport: httpx.ASGITransport,
    victim_app: httpx.AsyncClient,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    """Issue 13.2: same URL, model and output mode, different keys and defenses."""
    defended = await create_key(
        victim_app,
        budget=100,
        defenses={"gaussian_noise": {"sigma": 0.1}, "round_decimals": 1},
    )
    plain = await create_key(victim_app, budget=100)
    first, noised = await _collect(
        victim_transport, redis_client, defended["api_key"], tmp_path / "d", target=20
    )
    second, clean = await _collect(
        victim_transport, redis_client, plain["api_key"], tmp_path / "p", target=20
    )
    assert first.paid == 20 and second.paid == 20 and second.cache_hits == 0
    assert (await budget_of(victim_app, plain["api_key"]))["spent"] == 20
    assert [r.result for r in clean.records] != [r.result for r in noised.records]
    # The same key under a changed policy pays again, too.
    response = await victim_app.put(
        f"/admin/keys/{plain['key_id']}/defenses",
        json={"round_decimals": 2},
        headers=ADMIN_HEADERS,
    )
    assert response.status_code == 200, response.text
    third, _ = await _collect(
        victim_transport, redis_client, plain["api_key"], tmp_path / "p2", target=20
    )
    assert third.paid == 20 and third.cache_hits == 0


async def test_never_one_query_over_the_allowance(
    victim_transport: httpx.ASGITransport,
    victim_app: httpx.AsyncClient,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    key = await create_key(victim_app, budget=37)
    stats, transfer = await _collect(
        victim_transport, redis_client, key["api_key"], tmp_path, target=100, allowance=37
    )
    assert stats.paid == 37 and len(transfer) == 37 and stats.stopped_by == "budget"
    assert (await budget_of(victim_app, key["api_key"]))["remaining"] == 0


async def test_victim_side_exhaustion_stops_cleanly(
    victim_transport: httpx.ASGITransport,
    victim_app: httpx.AsyncClient,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    """The attacker thinks it may spend 64, but the victim only allows 40: it stops, never
    over, and keeps every answer it got as a prefix."""
    key = await create_key(victim_app, budget=40)
    stats, transfer = await _collect(
        victim_transport, redis_client, key["api_key"], tmp_path, target=64, allowance=64
    )
    assert stats.stopped_by == "victim-exhausted"
    assert (await budget_of(victim_app, key["api_key"]))["spent"] <= 40
    assert len(transfer) <= 40 and [r.index for r in transfer.records] == list(range(len(transfer)))


class _Flaky(httpx.AsyncBaseTransport):
    """Refuses the first classify calls with 503 / throttling 429, then passes through."""

    def __init__(self, inner: httpx.AsyncBaseTransport, failures: list[ProblemType]) -> None:
        self.inner = inner
        self.failures = failures

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/classify" and self.failures:
            kind = self.failures.pop(0)
            return httpx.Response(
                kind.status,
                content=make_problem(kind, "busy").to_json(),
                headers={"content-type": PROBLEM_CONTENT_TYPE, "Retry-After": "2"},
            )
        return await self.inner.handle_async_request(request)


async def test_overload_and_throttling_are_retried_without_overspending(
    victim_transport: httpx.ASGITransport,
    victim_app: httpx.AsyncClient,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    key = await create_key(victim_app, budget=48)
    flaky = _Flaky(
        victim_transport,
        [ProblemType.OVERLOADED, ProblemType.DETECTION_THROTTLED, ProblemType.OVERLOADED],
    )
    sleeps: list[float] = []
    stats, transfer = await _collect(
        flaky, redis_client, key["api_key"], tmp_path, target=48, sleeps=sleeps
    )
    assert len(transfer) == 48 and stats.paid == 48
    assert len(sleeps) == 3 and all(s >= 2.0 for s in sleeps)
    assert (await budget_of(victim_app, key["api_key"]))["spent"] == 48


class _Restarting(httpx.AsyncBaseTransport):
    """The victim dies while answering classify call ``crash_at`` (it was charged and answered,
    the answer never arrives), then refuses ``down_for`` connections, then serves again."""

    def __init__(self, inner: httpx.AsyncBaseTransport, *, crash_at: int, down_for: int) -> None:
        self.inner = inner
        self.crash_at = crash_at
        self.down_for = down_for
        self.classify_calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.classify_calls >= self.crash_at and self.down_for > 0:
            self.down_for -= 1
            raise httpx.ConnectError("connection refused")
        if request.url.path == "/v1/classify":
            self.classify_calls += 1
            if self.classify_calls == self.crash_at:
                response = await self.inner.handle_async_request(request)
                await response.aread()
                raise httpx.RemoteProtocolError("server disconnected without a response")
        return await self.inner.handle_async_request(request)


async def test_a_victim_restart_mid_run_is_waited_out_and_every_paid_answer_kept(
    victim_transport: httpx.ASGITransport,
    victim_app: httpx.AsyncClient,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    """Issue 13.3: more refused connections than max_attempts; the run still finishes its
    budget, paid = charged = answers in the transfer set."""
    key = await create_key(victim_app, budget=64)
    restarting = _Restarting(victim_transport, crash_at=2, down_for=12)
    stats, transfer = await _collect(
        restarting,
        redis_client,
        key["api_key"],
        tmp_path,
        target=64,
        retry=RetryPolicy(max_attempts=6, retry_window_s=600),
    )
    assert restarting.down_for == 0  # the outage happened
    assert stats.stopped_by == "target"
    assert (await budget_of(victim_app, key["api_key"]))["spent"] == 64
    assert stats.paid == 64 and len(transfer) == 64 and stats.clips == 64


async def test_a_rerun_does_not_count_answers_charged_by_the_first_run_and_finishes(
    victim_transport: httpx.ASGITransport,
    victim_app: httpx.AsyncClient,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    key = await create_key(victim_app, budget=64)
    dying = _Restarting(victim_transport, crash_at=2, down_for=10**6)  # never comes back
    first, first_set = await _collect(
        dying,
        redis_client,
        key["api_key"],
        tmp_path / "a",
        target=64,
        retry=RetryPolicy(max_attempts=2, retry_window_s=0),
        concurrency=1,
    )
    assert first.stopped_by == "victim-unavailable"  # not 'throttled'
    spent_first = (await budget_of(victim_app, key["api_key"]))["spent"]
    assert spent_first == 32 and first.paid == 16 and len(first_set) == 16
    second, second_set = await _collect(
        victim_transport,
        redis_client,
        key["api_key"],
        tmp_path / "b",
        target=64,
        allowance=64 - spent_first,
    )
    spent = (await budget_of(victim_app, key["api_key"]))["spent"]
    assert spent == 64 and second.paid == spent - spent_first == 32
    assert second.extra["replayed"] == 16 and second.cache_hits == 16
    assert second.stopped_by == "target" and len(second_set) == 64


def _video_folder(root: Path) -> Path:
    data = SynthActions(seed=3, frames=24, height=40, width=40)
    for i, name in enumerate(["Jump", "Run"]):
        folder = root / name
        folder.mkdir(parents=True)
        (folder / f"v_{name}_g01_c01.mp4").write_bytes(encode_mp4(data.clip(i)))
    return root


@pytest.mark.parametrize(
    "source",
    [
        {"kind": "noise", "distribution": "gaussian"},
        {"kind": "stacked_affine"},
        {"kind": "synthactions", "seed": 77, "labelled": True},
        {"kind": "video_folder", "root": "VIDEOS", "clips_per_video": 4},
        {
            "kind": "mix",
            "parts": [
                {"source": {"kind": "synthactions", "seed": 77}, "weight": 0.25},
                {"source": {"kind": "stacked_affine"}, "weight": 0.75},
            ],
        },
    ],
    ids=["noise", "stacked_affine", "synthactions", "video_folder", "mix"],
)
async def test_every_source_feeds_the_transfer_set(
    source: dict[str, Any],
    victim_transport: httpx.ASGITransport,
    victim_app: httpx.AsyncClient,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    if source["kind"] == "video_folder":
        source = {**source, "root": str(_video_folder(tmp_path / "videos"))}
    key = await create_key(victim_app, budget=100)
    stats, transfer = await _collect(
        victim_transport,
        redis_client,
        key["api_key"],
        tmp_path / "t",
        target=8,
        batch=4,
        source=source,
    )
    assert len(transfer) == 8 and stats.paid == 8
    first, clip = next(transfer.iter_clips())
    assert clip.shape == (16, 32, 32, 3) and clip.dtype == np.uint8
    assert "index" in first.result and first.recipe
    if source["kind"] == "synthactions":
        assert all(r.true_label is not None for r in transfer.records)
