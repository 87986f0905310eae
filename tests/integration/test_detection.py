"""Detectors and their actions over HTTP, with real Redis; per-key selection through the admin
API; state across restarts and processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from helpers.services import ADMIN_TOKEN, start_victim
from helpers.victim import ADMIN_HEADERS, budget_of, create_key, npy_request

from shared.detection import NaturalnessEmbedding
from shared.synthactions import SynthActions
from victim_server.accounting.connection import connect_redis
from victim_server.app import create_app
from victim_server.detection.base import DetectorUnavailable
from victim_server.detection.registry import build_detectors
from victim_server.detection.service import DetectionService
from victim_server.metrics import VictimMetrics
from victim_server.services import default_detection
from victim_server.settings import Settings

PRADA = {"detector": "prada_stats"}  # PRADA on the naturalness statistics, default delta 0.85
OOD = {"detector": "ood"}


def _noise(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 16, 32, 32, 3), dtype=np.uint8)


async def _attack_until(
    client: httpx.AsyncClient, api_key: str, status: int, limit: int = 1000, batch: int = 20
) -> tuple[int, httpx.Response]:
    """Send noise batches until an answer has ``status``; returns clips sent before it."""
    sent = 0
    while sent < limit:
        response = await client.post("/v1/classify", **npy_request(_noise(batch, sent), api_key))
        if response.status_code == status:
            return sent, response
        assert response.status_code == 200, response.text
        sent += batch
    raise AssertionError(f"no {status} within {limit} queries")


@pytest.mark.parametrize("detector", ["prada_stats", "ood"])
async def test_noise_attack_is_blocked_within_1000_queries(
    victim_app: httpx.AsyncClient, detector: str
) -> None:
    key = await create_key(
        victim_app, budget=5000, detection={"detector": detector, "action": "block"}
    )
    sent, refused = await _attack_until(victim_app, key["api_key"], 403)
    assert sent <= 1000
    assert refused.json()["type"] == "urn:vidsteal:problem:detection-blocked"
    assert (await budget_of(victim_app, key["api_key"]))["spent"] == sent  # refusal is free
    status = (
        await victim_app.get(f"/admin/keys/{key['key_id']}/detection", headers=ADMIN_HEADERS)
    ).json()
    assert status["detector"] == detector and status["alarm"] is True
    assert status["alarm_at"] is not None and status["queries"] == sent
    assert status["alarm_query"] <= sent
    if detector == "ood":
        assert status["w"] is None and status["score"] >= _ood_limit(victim_app)
        assert sent <= 40  # noise is out of distribution from the first clip
    else:
        assert status["w"] < 0.85 and status["score"] == status["w"]
    metrics = (await victim_app.get("/metrics")).text
    assert 'vidsteal_detection_alarms_total{action="block"} 1.0' in metrics
    assert f'vidsteal_detection_score{{detector="{detector}",key_id="{key["key_id"]}"}}' in metrics


def _ood_limit(client: httpx.AsyncClient) -> float:
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    services = transport.app.state.services  # type: ignore[attr-defined]
    limit: float = services.detection.detectors["ood"].calibration.limit
    return limit


@pytest.mark.slow
async def test_1000_benign_clips_from_unseen_seeds_alarm_no_detector(
    victim_app: httpx.AsyncClient,
) -> None:
    detectors = ("prada", "prada_stats", "ood")
    keys = {
        d: await create_key(victim_app, budget=1000, detection={"detector": d, "action": "block"})
        for d in detectors
    }
    for seed in (101, 202):
        data = SynthActions(seed=seed)
        for start in range(0, 500, 50):
            clips, _ = data.batch(start, 50)
            for key in keys.values():
                response = await victim_app.post(
                    "/v1/classify", **npy_request(clips, key["api_key"])
                )
                assert response.status_code == 200, response.text
    for detector, key in keys.items():
        status = (
            await victim_app.get(f"/admin/keys/{key['key_id']}/detection", headers=ADMIN_HEADERS)
        ).json()
        assert status["queries"] == 1000 and status["alarm"] is False, (detector, status)
        if detector.startswith("prada"):
            assert status["w"] > 0.85


async def test_feature_prada_alarms_on_perturbed_copies(victim_app: httpx.AsyncClient) -> None:
    """PRADA in the victim's feature space catches what PRADA was built for: a stream where
    each natural clip is followed by a slightly perturbed copy (Jacobian-style augmentation),
    so the minimum distances split into far and near (not normal)."""
    key = await create_key(
        victim_app, budget=2000, detection={"detector": "prada", "action": "log"}
    )
    data = SynthActions(seed=303)
    rng = np.random.default_rng(0)
    for start in range(0, 400, 20):
        fresh = data.batch(start, 20)[0]
        jitter = rng.integers(-3, 4, size=fresh.shape, dtype=np.int16)
        copies = np.clip(fresh.astype(np.int16) + jitter, 0, 255).astype(np.uint8)
        batch = np.stack([fresh, copies], axis=1).reshape(-1, *fresh.shape[1:])  # a, a', b, b'
        response = await victim_app.post("/v1/classify", **npy_request(batch, key["api_key"]))
        assert response.status_code == 200
    status = (
        await victim_app.get(f"/admin/keys/{key['key_id']}/detection", headers=ADMIN_HEADERS)
    ).json()
    assert status["detector"] == "prada" and status["queries"] == 800
    assert status["alarm"] is True and status["alarm_query"] <= 800  # W < 0.85 at that test


async def test_detectors_are_selected_per_key_and_bad_names_are_problems(
    victim_app: httpx.AsyncClient,
) -> None:
    ood = await create_key(victim_app, budget=100, detection=OOD)
    stats = await create_key(victim_app, budget=100, detection=PRADA)
    for key, detector in ((ood, "ood"), (stats, "prada_stats")):
        assert key["detection"]["detector"] == detector
        r = await victim_app.post("/v1/classify", **npy_request(_noise(10, 1), key["api_key"]))
        assert r.status_code == 200
    views = {
        d: (
            await victim_app.get(f"/admin/keys/{k['key_id']}/detection", headers=ADMIN_HEADERS)
        ).json()
        for d, k in (("ood", ood), ("prada_stats", stats))
    }
    assert views["ood"]["score"] > 0 and views["ood"]["w"] is None  # 10 flagged clips
    assert views["prada_stats"]["queries"] == 10 and views["prada_stats"]["w"] is None
    bad = await victim_app.post(
        "/admin/keys",
        json={"budget": 10, "detection": {"detector": "seat-v9"}},
        headers=ADMIN_HEADERS,
    )
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert bad.json()["type"] == "urn:vidsteal:problem:validation-error"
    assert "detector" in bad.json()["detail"]
    put = await victim_app.put(
        f"/admin/keys/{ood['key_id']}/detection",
        json={"detector": "nope"},
        headers=ADMIN_HEADERS,
    )
    assert put.status_code == 422 and put.json()["type"].endswith("validation-error")
    switched = await victim_app.put(
        f"/admin/keys/{ood['key_id']}/detection", json=PRADA, headers=ADMIN_HEADERS
    )
    assert switched.status_code == 200 and switched.json()["detector"] == "prada_stats"
    assert switched.json()["queries"] == 0  # each detector keeps its own state


async def test_ood_state_survives_a_victim_restart(redis_url: str) -> None:
    """The OOD monitor's CUSUM lives in Redis: a new victim on the same Redis keeps the alarm."""
    settings = Settings(admin_token=ADMIN_TOKEN, redis_url=redis_url, threads=1)
    first = create_app(settings)
    async with (
        first.router.lifespan_context(first),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=first), base_url="http://victim"
        ) as client,
    ):
        key = await create_key(client, budget=500, detection={**OOD, "action": "block"})
        sent, _ = await _attack_until(client, key["api_key"], 403, batch=10)
        before = (
            await client.get(f"/admin/keys/{key['key_id']}/detection", headers=ADMIN_HEADERS)
        ).json()
    second = create_app(settings)
    async with (
        second.router.lifespan_context(second),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=second), base_url="http://victim"
        ) as client,
    ):
        after = (
            await client.get(f"/admin/keys/{key['key_id']}/detection", headers=ADMIN_HEADERS)
        ).json()
        assert after == before and after["alarm"] is True and after["queries"] == sent
        blocked = await client.post("/v1/classify", **npy_request(_noise(1, 3), key["api_key"]))
        assert blocked.status_code == 403


async def test_throttle_answers_429_with_retry_after(victim_app: httpx.AsyncClient) -> None:
    key = await create_key(victim_app, budget=5000, detection={**PRADA, "action": "throttle"})
    sent, refused = await _attack_until(victim_app, key["api_key"], 429)
    assert refused.json()["type"] == "urn:vidsteal:problem:detection-throttled"
    assert int(refused.headers["Retry-After"]) >= 1
    assert (await budget_of(victim_app, key["api_key"]))["spent"] == sent


async def test_poison_keeps_the_shape_but_changes_the_answers(
    victim_app: httpx.AsyncClient,
) -> None:
    key = await create_key(
        victim_app, budget=5000, output="probs", detection={**PRADA, "action": "poison"}
    )
    clean = await create_key(victim_app, budget=100, output="probs")
    await _attack_until_alarm(victim_app, key)
    probe = SynthActions(seed=5).batch(0, 40)[0]
    poisoned = await victim_app.post("/v1/classify", **npy_request(probe, key["api_key"]))
    honest = await victim_app.post("/v1/classify", **npy_request(probe, clean["api_key"]))
    p = np.array([r["probs"] for r in poisoned.json()["results"]])
    h = np.array([r["probs"] for r in honest.json()["results"]])
    assert p.shape == h.shape and np.allclose(p.sum(1), 1, atol=1e-4)
    assert (p.argmax(1) != h.argmax(1)).mean() > 0.5
    metrics = (await victim_app.get("/metrics")).text
    # the 40 probe clips, plus the 20 of the request whose queries raised the alarm
    assert "vidsteal_poisoned_answers_total 60.0" in metrics


async def _attack_until_alarm(client: httpx.AsyncClient, key: dict[str, Any]) -> None:
    for start in range(0, 1000, 20):
        response = await client.post(
            "/v1/classify", **npy_request(_noise(20, start), key["api_key"])
        )
        assert response.status_code == 200
        status = (
            await client.get(f"/admin/keys/{key['key_id']}/detection", headers=ADMIN_HEADERS)
        ).json()
        if status["alarm"]:
            return
    raise AssertionError("no alarm within 1000 queries")


async def test_policy_can_be_changed_and_reset_by_the_admin(
    victim_app: httpx.AsyncClient,
) -> None:
    key = await create_key(victim_app, budget=5000, detection={**PRADA, "action": "log"})
    await _attack_until_alarm(victim_app, key)
    ok = await victim_app.post("/v1/classify", **npy_request(_noise(1, 7), key["api_key"]))
    assert ok.status_code == 200  # "log" only records the alarm
    changed = await victim_app.put(
        f"/admin/keys/{key['key_id']}/detection",
        json={**PRADA, "action": "block"},
        headers=ADMIN_HEADERS,
    )
    assert changed.status_code == 200 and changed.json()["action"] == "block"
    blocked = await victim_app.post("/v1/classify", **npy_request(_noise(1, 8), key["api_key"]))
    assert blocked.status_code == 403
    reset = await victim_app.put(
        f"/admin/keys/{key['key_id']}/detection?reset=true",
        json={**PRADA, "action": "block"},
        headers=ADMIN_HEADERS,
    )
    assert reset.json()["alarm"] is False and reset.json()["queries"] == 0
    again = await victim_app.post("/v1/classify", **npy_request(_noise(1, 9), key["api_key"]))
    assert again.status_code == 200
    defenses = await victim_app.put(
        f"/admin/keys/{key['key_id']}/defenses",
        json={"top_k": 2, "round_decimals": 2},
        headers=ADMIN_HEADERS,
    )
    assert defenses.status_code == 200 and defenses.json()["defenses"]["top_k"] == 2


async def test_state_survives_a_restart_and_is_shared_by_two_processes(
    redis_url: str, tmp_path: Path
) -> None:
    first = start_victim(redis_url, tmp_path / "a.log")
    second = start_victim(redis_url, tmp_path / "b.log")
    try:
        clients = [httpx.AsyncClient(base_url=v.url, timeout=60) for v in (first, second)]
        key = await create_key(clients[0], budget=5000, detection={**PRADA, "action": "block"})
        for i in range(10):  # 100 clips, alternating processes
            r = await clients[i % 2].post(
                "/v1/classify", **npy_request(_noise(10, i), key["api_key"])
            )
            assert r.status_code == 200
        views = [
            (await c.get(f"/admin/keys/{key['key_id']}/detection", headers=ADMIN_HEADERS)).json()
            for c in clients
        ]
        assert views[0] == views[1] and views[0]["queries"] == 100
        sent, _ = await _attack_until(clients[1], key["api_key"], 403)
        first.stop()
        await clients[0].aclose()
        restarted = start_victim(redis_url, tmp_path / "c.log")
        async with httpx.AsyncClient(base_url=restarted.url, timeout=60) as client:
            status = (
                await client.get(f"/admin/keys/{key['key_id']}/detection", headers=ADMIN_HEADERS)
            ).json()
            assert status["alarm"] is True and status["queries"] == 100 + sent
            blocked = await client.post("/v1/classify", **npy_request(_noise(1, 0), key["api_key"]))
            assert blocked.status_code == 403
        restarted.stop()
        await clients[1].aclose()
    finally:
        first.stop()
        second.stop()
    await asyncio.sleep(0)


async def _app_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://victim") as c,
    ):
        yield c


async def test_keys_without_a_policy_get_the_servers_default_detector(redis_url: str) -> None:
    """auto: the embedded victim has an OOD calibration, so an omitted policy means ood (log);
    an explicit policy is kept; a server set to none leaves keys undetected."""
    auto = Settings(admin_token=ADMIN_TOKEN, redis_url=redis_url, threads=1)  # type: ignore[arg-type]
    async for client in _app_client(auto):
        default = await create_key(client, budget=100)
        assert default["detection"] == {"detector": "ood", "delta": 0.85, "action": "log"}
        explicit = await create_key(client, budget=100, detection={"detector": "none"})
        assert explicit["detection"]["detector"] == "none"
        response = await client.post(
            "/v1/classify", **npy_request(_noise(10, 4), default["api_key"])
        )
        assert response.status_code == 200
        status = (
            await client.get(f"/admin/keys/{default['key_id']}/detection", headers=ADMIN_HEADERS)
        ).json()
        assert status["detector"] == "ood" and status["queries"] == 10
    off = Settings(admin_token=ADMIN_TOKEN, redis_url=redis_url, threads=1, default_detector="none")  # type: ignore[arg-type]
    async for client in _app_client(off):
        assert (await create_key(client, budget=100))["detection"]["detector"] == "none"


async def test_auto_means_none_and_ood_is_refused_for_a_model_without_calibration(
    redis_url: str,
) -> None:
    binary = connect_redis(redis_url, decode=False)
    try:
        embedding = NaturalnessEmbedding.fit(SynthActions(seed=5, frames=8).batch(0, 20)[0])
        detectors = build_detectors(binary, feature_dim=8, embedding=embedding, ood=None)
        service = DetectionService(detectors, VictimMetrics(), throttle_retry_after_s=1.0)
        assert default_detection("auto", service).detector == "none"
        assert default_detection("prada", service).detector == "prada"
        with pytest.raises(DetectorUnavailable, match="calibrate-detectors"):
            default_detection("ood", service)
    finally:
        await binary.aclose()
