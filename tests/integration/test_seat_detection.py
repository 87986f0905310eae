"""The SEAT detector over HTTP with real Redis: selected per key, blocks a key that keeps
sending near-copies of its own queries, reports its state on the detection status route."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest
from helpers.services import ADMIN_TOKEN
from helpers.victim import ADMIN_HEADERS, budget_of, create_key, npy_request

from shared.synthactions import SynthActions
from victim_server.accounting import keyspace
from victim_server.app import create_app
from victim_server.detection.base import Observation
from victim_server.detection.seat_encoder import SeatModel
from victim_server.services import Services
from victim_server.settings import Settings

SEAT = {"detector": "seat", "action": "block"}


def _near_copies(start: int) -> np.ndarray:
    """Two fresh clips, each followed by four brightness-shifted, noisy copies (an attacker
    augmenting its seeds)."""
    fresh, _ = SynthActions(seed=4711).batch(start, 2)
    rng = np.random.default_rng(start)
    batch = []
    for clip in fresh:
        batch.append(clip)
        for _ in range(4):
            noise = rng.integers(-6, 7, size=clip.shape) + int(rng.integers(-10, 11))
            batch.append(np.clip(clip.astype(np.int16) + noise, 0, 255).astype(np.uint8))
    return np.stack(batch)


async def test_seat_blocks_a_near_duplicate_stream(victim_app: httpx.AsyncClient) -> None:
    key = await create_key(victim_app, budget=1000, detection=SEAT)
    assert key["detection"]["detector"] == "seat"
    sent = 0
    while sent < 300:
        response = await victim_app.post(
            "/v1/classify", **npy_request(_near_copies(sent), key["api_key"])
        )
        if response.status_code == 403:
            break
        assert response.status_code == 200, response.text
        sent += 10
    else:
        raise AssertionError("seat never blocked the near-duplicate stream")
    assert response.json()["type"] == "urn:vidsteal:problem:detection-blocked"
    assert (await budget_of(victim_app, key["api_key"]))["spent"] == sent
    status = (
        await victim_app.get(f"/admin/keys/{key['key_id']}/detection", headers=ADMIN_HEADERS)
    ).json()
    assert status["detector"] == "seat" and status["alarm"] is True
    assert status["queries"] == sent and status["alarm_query"] <= sent
    assert status["w"] is None and status["score"] > 0
    switched = await victim_app.put(
        f"/admin/keys/{key['key_id']}/detection",
        json={"detector": "ood", "action": "block"},
        headers=ADMIN_HEADERS,
    )
    assert switched.status_code == 200 and switched.json()["alarm"] is False
    back = await victim_app.put(
        f"/admin/keys/{key['key_id']}/detection", json=SEAT, headers=ADMIN_HEADERS
    )
    assert back.json()["alarm"] is True  # each detector keeps its own state


@pytest.fixture
async def counted_victim(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[httpx.AsyncClient, Services, list[tuple[str, int]]]]:
    """The victim app in process, each SEAT encoder pass recorded as (thread, clips)."""
    calls: list[tuple[str, int]] = []
    embed = SeatModel.embed

    def counted(self: SeatModel, clips: np.ndarray, *, batch: int = 64) -> np.ndarray:
        calls.append((threading.current_thread().name, len(clips)))
        return embed(self, clips, batch=batch)

    monkeypatch.setattr(SeatModel, "embed", counted)
    settings = Settings(admin_token=ADMIN_TOKEN, redis_url=redis_url, threads=1)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://victim") as client:
            yield client, app.state.services, calls


async def test_seat_keys_get_embeddings_from_the_micro_batch(
    counted_victim: tuple[httpx.AsyncClient, Services, list[tuple[str, int]]],
) -> None:
    """Concurrent 1-clip requests of seat keys are embedded by the model thread, one encoder
    pass per micro-batch (never a pass per request in the detector), and the keys' detector
    state is the one the detector's own per-request path reaches on the same clips."""
    client, services, calls = counted_victim
    keys = [await create_key(client, budget=100, detection=SEAT) for _ in range(4)]
    other = await create_key(client, budget=100, detection={"detector": "ood"})
    streams = [_near_copies(10 * i)[:5] for i in range(4)]
    batches_before = _batches(services)
    for round_ in range(5):
        responses = await asyncio.gather(
            *[
                client.post(
                    "/v1/classify", **npy_request(stream[round_ : round_ + 1], k["api_key"])
                )
                for k, stream in zip(keys, streams, strict=True)
            ]
        )
        assert all(r.status_code == 200 for r in responses), responses[0].text
    batches = _batches(services) - batches_before
    assert {thread for thread, _ in calls} == {"model"}  # no pass in the detector
    assert sum(n for _, n in calls) == 20 and len(calls) == batches
    assert len(calls) < 20 and max(n for _, n in calls) > 1  # requests shared passes
    served = [await _state(services, k["key_id"]) for k in keys]
    assert all(state["pairs"] > 0 for state in served)  # near copies: the comparison has teeth

    calls.clear()
    response = await client.post("/v1/classify", **npy_request(streams[0][:2], other["api_key"]))
    assert response.status_code == 200 and calls == []  # other detectors: no encoder pass

    seat = services.detection.detectors["seat"]
    for i, stream in enumerate(streams):  # the per-request path: the detector embeds
        for clip in stream:
            await seat.observe(f"direct{i}", Observation(clip[None], np.zeros((1, 1)), None))
        direct = await _state(services, f"direct{i}")
        assert direct["queries"] == served[i]["queries"] == 5
        for field in ("flagged", "pairs", "near_pattern", "alarm"):
            assert direct[field] == served[i][field], field
        assert direct["score"] == pytest.approx(served[i]["score"], abs=1e-9)
    assert all(thread != "model" for thread, _ in calls) and len(calls) == 20


def _batches(services: Services) -> int:
    """Micro-batches the model thread has run (the batch-size histogram's count)."""
    for metric in services.metrics.batch_clips.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count"):
                return int(sample.value)
    raise AssertionError("no batch_clips count")


async def _state(services: Services, key_id: str) -> dict[str, Any]:
    seat = services.detection.detectors["seat"]
    verdict = await seat.status(key_id)
    counts = await services.redis.hgetall(keyspace.detection(key_id, "seat"))
    return {
        "queries": verdict.queries,
        "alarm": verdict.alarm,
        "score": verdict.score,
        **{name: int(counts.get(name, 0)) for name in ("flagged", "pairs", "near_pattern")},
    }
