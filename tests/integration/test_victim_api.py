"""The victim API over real HTTP (uvicorn on 127.0.0.1) and real Redis."""

from __future__ import annotations

import asyncio
import gzip
import io
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from helpers.services import LiveVictim, start_victim
from helpers.victim import ADMIN_HEADERS, budget_of, clips, create_key, npy_request

from shared.codec import NPY_CONTENT_TYPE, compress, encode_json, encode_npy, encode_raw
from shared.video import encode_mp4

PROBLEM = "application/problem+json"


def _client(victim: LiveVictim, connections: int = 100) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=victim.url,
        timeout=60.0,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


async def test_500_concurrent_single_clip_requests_against_budget_137(
    live_victim: LiveVictim,
) -> None:
    async with _client(live_victim, connections=250) as client:
        key = await create_key(client, budget=137)
        one = clips(1)
        responses = await asyncio.gather(
            *[client.post("/v1/classify", **npy_request(one, key["api_key"])) for _ in range(500)]
        )
        codes = [r.status_code for r in responses]
        ok = codes.count(200)
        # On a starved CPU a Redis reply can miss redis_timeout_s: such a request is a 503
        # accounting-unavailable whose charge is given back, never a silent charge.
        unavailable = [r.json() for r in responses if r.status_code == 503]
        assert all(p["type"] == "urn:vidsteal:problem:accounting-unavailable" for p in unavailable)
        assert ok + codes.count(429) + len(unavailable) == 500
        assert ok == 137 if not unavailable else 0 < ok <= 137
        assert all(r.headers["content-type"] == PROBLEM for r in responses if r.status_code == 429)
        budget = await budget_of(client, key["api_key"])
        for _ in range(50):  # a charge whose settlement was pending is given back shortly
            if budget["spent"] == ok:
                break
            await asyncio.sleep(0.2)
            budget = await budget_of(client, key["api_key"])
        assert budget == {
            "key_id": key["key_id"],
            "budget": 137,
            "spent": ok,
            "remaining": 137 - ok,
        }


async def test_twelve_requests_of_five_clips_against_budget_50(live_victim: LiveVictim) -> None:
    """The issue's acceptance script: 10 succeed, 2 get 429, remaining 0, /metrics agrees."""
    async with _client(live_victim) as client:
        key = await create_key(client, budget=50)
        five = clips(5)
        responses = await asyncio.gather(
            *[client.post("/v1/classify", **npy_request(five, key["api_key"])) for _ in range(12)]
        )
        ok = [r for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code == 429]
        assert len(ok) == 10 and len(refused) == 2
        for r in refused:
            body = r.json()
            assert body["type"] == "urn:vidsteal:problem:budget-exhausted"
            assert body["budget"]["budget"] == 50
        assert all(len(r.json()["results"]) == 5 for r in ok)
        assert min(r.json()["budget"]["remaining"] for r in ok) == 0
        assert (await budget_of(client, key["api_key"]))["remaining"] == 0
        metrics = (await client.get("/metrics")).text
        assert (
            _sample(metrics, "vidsteal_queries_total", key_id=key["key_id"], outcome="accepted")
            == 50
        )
        assert (
            _sample(
                metrics, "vidsteal_queries_total", key_id=key["key_id"], outcome="budget_exhausted"
            )
            == 10
        )
        assert _sample(metrics, "vidsteal_budget_remaining", key_id=key["key_id"]) == 0


async def test_idempotent_retry_is_answered_and_charged_once(live_victim: LiveVictim) -> None:
    async with _client(live_victim) as client:
        key = await create_key(client, budget=10)
        batch = clips(2)
        first = await client.post(
            "/v1/classify", **npy_request(batch, key["api_key"], **{"Idempotency-Key": "abc"})
        )
        retry = await client.post(
            "/v1/classify", **npy_request(batch, key["api_key"], **{"Idempotency-Key": "abc"})
        )
        assert first.status_code == retry.status_code == 200
        assert retry.headers.get("idempotent-replayed") == "true"
        assert retry.json()["request_id"] == first.json()["request_id"]
        assert retry.json()["results"] == first.json()["results"]
        assert (await budget_of(client, key["api_key"]))["spent"] == 2
        other = await client.post(
            "/v1/classify",
            **npy_request(clips(2, seed=9), key["api_key"], **{"Idempotency-Key": "abc"}),
        )
        assert other.status_code == 422 and other.headers["content-type"] == PROBLEM
        assert (await budget_of(client, key["api_key"]))["spent"] == 2


def _npy_of(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def _bad_bodies() -> list[tuple[str, bytes, dict[str, str], int, str]]:
    good = encode_npy(clips(1))
    raw, _ = encode_raw(clips(1))
    # A valid .npy of 1,400 clips (69 MB) that compresses to almost nothing.
    bomb_npy = encode_npy(np.zeros((1400, 16, 32, 32, 3), np.uint8))
    bomb = compress(bomb_npy, "gzip")
    return [
        (
            "wrong dtype",
            _npy_of(np.zeros((1, 16, 32, 32, 3), np.float32)),
            {"Content-Type": NPY_CONTENT_TYPE},
            422,
            "invalid-clip",
        ),
        (
            "wrong rank",
            _npy_of(np.zeros((16, 32, 32, 3), np.uint8)),
            {"Content-Type": NPY_CONTENT_TYPE},
            422,
            "invalid-clip",
        ),
        (
            "four channels",
            _npy_of(np.zeros((1, 16, 32, 32, 4), np.uint8)),
            {"Content-Type": NPY_CONTENT_TYPE},
            422,
            "invalid-clip",
        ),
        (
            "pickled objects",
            _npy_of(np.array([{"a": 1}], dtype=object)),
            {"Content-Type": NPY_CONTENT_TYPE},
            422,
            "invalid-clip",
        ),
        ("truncated npy", good[:-100], {"Content-Type": NPY_CONTENT_TYPE}, 400, "bad-clip"),
        ("empty body", b"", {"Content-Type": NPY_CONTENT_TYPE}, 400, "bad-clip"),
        ("raw without shape", raw, {"Content-Type": "application/octet-stream"}, 400, "bad-clip"),
        (
            "NaN in JSON",
            b'{"clips": [[[[[NaN, 0, 0]]]]]}',
            {"Content-Type": "application/json"},
            422,
            "invalid-clip",
        ),
        ("broken JSON", b'{"clips": [', {"Content-Type": "application/json"}, 400, "bad-clip"),
        (
            "undecodable video",
            b"\x00\x01garbage" * 100,
            {"Content-Type": "video/mp4"},
            415,
            "unsupported-media-type",
        ),
        (
            "unknown content type",
            good,
            {"Content-Type": "text/plain"},
            415,
            "unsupported-media-type",
        ),
        (
            "unknown encoding",
            good,
            {"Content-Type": NPY_CONTENT_TYPE, "Content-Encoding": "br"},
            415,
            "unsupported-media-type",
        ),
        (
            "gzip of something that is not a .npy",
            compress(b"\0" * (70 * 1024 * 1024), "gzip"),
            {"Content-Type": NPY_CONTENT_TYPE, "Content-Encoding": "gzip"},
            400,
            "bad-clip",
        ),
        (
            "gzip bomb",
            bomb,
            {"Content-Type": NPY_CONTENT_TYPE, "Content-Encoding": "gzip"},
            413,
            "payload-too-large",
        ),
        (
            "zstd bomb",
            compress(bomb_npy, "zstd"),
            {"Content-Type": NPY_CONTENT_TYPE, "Content-Encoding": "zstd"},
            413,
            "payload-too-large",
        ),
        (
            "body over the limit",
            b"\0" * (3 * 1024 * 1024),
            {"Content-Type": NPY_CONTENT_TYPE},
            413,
            "payload-too-large",
        ),
    ]


@pytest.fixture
def small_limit_victim(redis_url: str, tmp_path: Path) -> Any:
    victim = start_victim(
        redis_url,
        tmp_path / "victim.log",
        extra_env={
            "VIDSTEAL_MAX_BODY_BYTES": str(2 * 1024 * 1024),
            "VIDSTEAL_MAX_DECODED_BYTES": str(16 * 1024 * 1024),
        },
    )
    try:
        yield victim
    finally:
        victim.stop()


async def test_bad_input_is_refused_uncharged_and_the_server_keeps_answering(
    small_limit_victim: LiveVictim,
) -> None:
    async with _client(small_limit_victim) as client:
        key = await create_key(client, budget=5)
        auth = {"Authorization": f"Bearer {key['api_key']}"}
        for name, body, headers, status, slug in _bad_bodies():
            response = await client.post("/v1/classify", content=body, headers={**auth, **headers})
            assert response.status_code == status, (name, response.text)
            assert response.headers["content-type"] == PROBLEM, name
            problem = response.json()
            assert problem["type"] == f"urn:vidsteal:problem:{slug}", (name, problem)
            assert problem["detail"], name
            assert (await budget_of(client, key["api_key"]))["spent"] == 0, name
        ok = await client.post("/v1/classify", **npy_request(clips(1), key["api_key"]))
        assert ok.status_code == 200
        assert (await budget_of(client, key["api_key"]))["spent"] == 1


async def test_auth_failures(live_victim: LiveVictim) -> None:
    async with _client(live_victim) as client:
        key = await create_key(client, budget=5)
        body = encode_npy(clips(1))
        headers = {"Content-Type": NPY_CONTENT_TYPE}
        missing = await client.post("/v1/classify", content=body, headers=headers)
        unknown = await client.post(
            "/v1/classify", content=body, headers={**headers, "Authorization": "Bearer vsk_x_y"}
        )
        assert missing.status_code == unknown.status_code == 401
        assert missing.json()["type"] == "urn:vidsteal:problem:unauthorized"
        revoke = await client.delete(f"/admin/keys/{key['key_id']}", headers=ADMIN_HEADERS)
        assert revoke.status_code == 200 and revoke.json()["revoked"] is True
        revoked = await client.post("/v1/classify", **npy_request(clips(1), key["api_key"]))
        assert revoked.status_code == 403
        assert revoked.json()["type"] == "urn:vidsteal:problem:key-revoked"
        not_admin = await client.get("/admin/keys", headers={"Authorization": "Bearer nope"})
        assert not_admin.status_code == 401


async def test_a_policy_change_applies_to_the_next_request_of_a_cached_key(
    victim_app: httpx.AsyncClient,
) -> None:
    """The classify path keeps a per-process copy of the key record; the reserve script refuses
    a copy older than the record's revision, so the next answer already follows a change."""
    key = await create_key(victim_app, budget=10)
    first = await victim_app.post("/v1/classify", **npy_request(clips(1), key["api_key"]))
    assert first.status_code == 200, first.text
    assert any(round(p, 2) != p for p in first.json()["results"][0]["probs"])
    changed = await victim_app.put(
        f"/admin/keys/{key['key_id']}/defenses", json={"round_decimals": 2}, headers=ADMIN_HEADERS
    )
    assert changed.status_code == 200, changed.text
    second = await victim_app.post("/v1/classify", **npy_request(clips(1), key["api_key"]))
    assert second.status_code == 200, second.text
    assert all(round(p, 2) == p for p in second.json()["results"][0]["probs"])
    assert second.json()["budget"]["spent"] == 2  # the refused stale reserve charged nothing
    revoke = await victim_app.delete(f"/admin/keys/{key['key_id']}", headers=ADMIN_HEADERS)
    assert revoke.status_code == 200
    third = await victim_app.post("/v1/classify", **npy_request(clips(1), key["api_key"]))
    assert third.status_code == 403, third.text


@pytest.mark.parametrize("mode", ["logits", "probs", "topk", "label"])
async def test_each_output_mode(victim_app: httpx.AsyncClient, mode: str) -> None:
    key = await create_key(victim_app, budget=10, output=mode, top_k=3)
    response = await victim_app.post("/v1/classify", **npy_request(clips(2), key["api_key"]))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["output"] == mode and len(body["results"]) == 2
    model = (
        await victim_app.get("/v1/model", headers={"Authorization": f"Bearer {key['api_key']}"})
    ).json()
    labels = model["labels"]
    for result in body["results"]:
        assert labels[result["index"]] == result["label"]
        fields = set(result) - {"index", "label"}
        assert fields == ({mode} if mode != "label" else set())
        if mode == "probs":
            assert abs(sum(result["probs"]) - 1) < 1e-4 and len(result["probs"]) == len(labels)
            assert int(np.argmax(result["probs"])) == result["index"]
        if mode == "logits":
            assert int(np.argmax(result["logits"])) == result["index"]
        if mode == "topk":
            scores = [entry["score"] for entry in result["topk"]]
            assert len(scores) == 3 and scores == sorted(scores, reverse=True)
            assert result["topk"][0]["index"] == result["index"]
    assert model["output"] == mode and model["input"]["frames"] == 16


async def test_json_raw_and_compressed_bodies_agree(victim_app: httpx.AsyncClient) -> None:
    key = await create_key(victim_app, budget=10, output="logits")
    batch = clips(1)
    auth = {"Authorization": f"Bearer {key['api_key']}"}
    raw, shape = encode_raw(batch)
    answers = []
    for content, headers in [
        (encode_npy(batch), {"Content-Type": NPY_CONTENT_TYPE}),
        (
            compress(encode_npy(batch), "zstd"),
            {"Content-Type": NPY_CONTENT_TYPE, "Content-Encoding": "zstd"},
        ),
        (
            gzip.compress(raw),
            {
                "Content-Type": "application/octet-stream",
                "Content-Encoding": "gzip",
                "X-Clip-Shape": shape,
            },
        ),
    ]:
        r = await victim_app.post("/v1/classify", content=content, headers={**auth, **headers})
        assert r.status_code == 200, r.text
        answers.append(r.json()["results"][0]["logits"])
    r = await victim_app.post("/v1/classify", json=encode_json(batch), headers=auth)
    assert r.status_code == 200
    answers.append(r.json()["results"][0]["logits"])
    for other in answers[1:]:
        np.testing.assert_allclose(other, answers[0], atol=1e-4)
    assert (await budget_of(victim_app, key["api_key"]))["spent"] == 4


async def test_mp4_and_multipart_uploads(victim_app: httpx.AsyncClient) -> None:
    key = await create_key(victim_app, budget=10)
    auth = {"Authorization": f"Bearer {key['api_key']}"}
    long_clip = np.repeat(clips(1)[0], 3, axis=0)  # 48 frames: sampled down to 16
    video = encode_mp4(long_clip)
    single = await victim_app.post(
        "/v1/classify", content=video, headers={**auth, "Content-Type": "video/mp4"}
    )
    assert single.status_code == 200, single.text
    assert len(single.json()["results"]) == 1
    files = [
        ("file", ("a.mp4", video, "video/mp4")),
        ("file", ("b.mp4", encode_mp4(clips(1, seed=3)[0]), "video/mp4")),
    ]
    multi = await victim_app.post("/v1/classify", files=files, headers=auth)
    assert multi.status_code == 200, multi.text
    assert len(multi.json()["results"]) == 2
    assert (await budget_of(victim_app, key["api_key"]))["spent"] == 3


async def test_admin_key_lifecycle(victim_app: httpx.AsyncClient) -> None:
    key = await create_key(victim_app, budget=3, name="alice")
    assert key["api_key"].startswith("vsk_") and key["remaining"] == 3
    listed = (await victim_app.get("/admin/keys", headers=ADMIN_HEADERS)).json()
    assert [k["key_id"] for k in listed] == [key["key_id"]]
    assert "api_key" not in listed[0]
    topped = await victim_app.post(
        f"/admin/keys/{key['key_id']}/topup", json={"amount": 4}, headers=ADMIN_HEADERS
    )
    assert topped.json()["budget"] == 7
    missing = await victim_app.get("/admin/keys/nope", headers=ADMIN_HEADERS)
    assert missing.status_code == 404 and missing.json()["type"].endswith("not-found")
    too_many = await victim_app.post(
        "/admin/keys", json={"budget": 1, "top_k": 99}, headers=ADMIN_HEADERS
    )
    assert too_many.status_code == 422
    negative = await victim_app.post("/admin/keys", json={"budget": -1}, headers=ADMIN_HEADERS)
    assert negative.status_code == 422 and negative.headers["content-type"] == PROBLEM


async def test_health_readiness_and_openapi(victim_app: httpx.AsyncClient) -> None:
    assert (await victim_app.get("/healthz")).json() == {"status": "ok"}
    ready = await victim_app.get("/readyz")
    assert ready.status_code == 200 and ready.json()["model"] == "swin3d_micro.synthactions"
    spec = (await victim_app.get("/openapi.json")).json()
    assert "/v1/classify" in spec["paths"]
    assert "application/x-npy" in spec["paths"]["/v1/classify"]["post"]["requestBody"]["content"]


async def test_redis_unreachable_means_503_never_a_free_query() -> None:
    from helpers.services import ADMIN_TOKEN, free_port

    from victim_server.app import create_app
    from victim_server.settings import Settings

    settings = Settings(
        admin_token=ADMIN_TOKEN,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        threads=1,
        redis_timeout_s=0.5,
    )  # type: ignore[arg-type]
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://v") as client:
            r = await client.post("/v1/classify", **npy_request(clips(1), "vsk_a_b"))
            assert r.status_code == 503
            assert r.json()["type"] == "urn:vidsteal:problem:accounting-unavailable"
            assert (await client.get("/readyz")).status_code == 503


async def test_metrics_match_what_happened(live_victim: LiveVictim) -> None:
    async with _client(live_victim) as client:
        key = await create_key(client, budget=6)
        sent = 0
        for n in (1, 2, 3):
            request = npy_request(clips(n), key["api_key"])
            sent += len(request["content"])
            assert (await client.post("/v1/classify", **request)).status_code == 200
            if n == 1:
                bad = {"content": b"nope", "headers": {**request["headers"]}}
                sent += 4
                assert (await client.post("/v1/classify", **bad)).status_code == 400
        # A spent key is refused before its body is read (the bytes are not received).
        request = npy_request(clips(1), key["api_key"])
        assert (await client.post("/v1/classify", **request)).status_code == 429
        text = (await client.get("/metrics")).text
        kid = key["key_id"]
        assert _sample(text, "vidsteal_queries_total", key_id=kid, outcome="accepted") == 6
        assert _sample(text, "vidsteal_queries_total", key_id=kid, outcome="budget_exhausted") == 1
        assert _sample(text, "vidsteal_queries_total", key_id=kid, outcome="invalid") == 1
        assert _sample(text, "vidsteal_budget_remaining", key_id=kid) == 0
        assert _sample(text, "vidsteal_received_bytes_total") == sent
        assert _sample(text, "vidsteal_batch_clips_sum") == 6
        assert _sample(text, "vidsteal_requests_total", route="/v1/classify", status="200") == 3
        assert _sample(text, "vidsteal_inference_seconds_count") >= 1


async def test_two_server_processes_on_one_redis_never_overspend(
    redis_url: str, tmp_path: Path
) -> None:
    victims = [start_victim(redis_url, tmp_path / f"v{i}.log") for i in range(2)]
    try:
        clients = [_client(v) for v in victims]
        key = await create_key(clients[0], budget=60)
        two = clips(2)
        responses = await asyncio.gather(
            *[
                clients[i % 2].post("/v1/classify", **npy_request(two, key["api_key"]))
                for i in range(40)
            ]
        )
        codes = [r.status_code for r in responses]
        assert codes.count(200) == 30 and codes.count(429) == 10
        for client in clients:
            assert (await budget_of(client, key["api_key"]))["spent"] == 60
            await client.aclose()
    finally:
        for victim in victims:
            victim.stop()


async def test_uvicorn_workers_share_budget_and_aggregate_metrics(
    redis_url: str, tmp_path: Path
) -> None:
    victim = start_victim(redis_url, tmp_path / "workers.log", workers=2)
    try:
        admin = _client(victim)
        key = await create_key(admin, budget=60)
        two = clips(2)

        async def one_request() -> int:
            # A fresh connection each time, so the kernel spreads requests over both workers.
            async with _client(victim) as client:
                response = await client.post("/v1/classify", **npy_request(two, key["api_key"]))
                return response.status_code

        codes = await asyncio.gather(*[one_request() for _ in range(40)])
        assert codes.count(200) == 30 and codes.count(429) == 10
        text = (await admin.get("/metrics")).text
        kid = key["key_id"]
        assert _sample(text, "vidsteal_queries_total", key_id=kid, outcome="accepted") == 60
        assert _sample(text, "vidsteal_queries_total", key_id=kid, outcome="budget_exhausted") == 20
        assert _sample(text, "vidsteal_batch_clips_sum") == 60
        assert _sample(text, "vidsteal_budget_remaining", key_id=kid) == 0
        assert (await budget_of(admin, key["api_key"]))["spent"] == 60
        await admin.aclose()
    finally:
        victim.stop()


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus exposition (labels matched as a subset)."""
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        match = re.match(r"^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)$", line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(3) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(4))
    raise AssertionError(f"no sample {name}{labels} in metrics")


async def test_provisioned_keys_are_created_once_and_survive_restarts(redis_url: str) -> None:
    from helpers.services import ADMIN_TOKEN

    from victim_server.app import create_app
    from victim_server.settings import Settings

    api_key = "vsk_demo01_" + "s" * 32
    settings = Settings(  # type: ignore[call-arg]
        admin_token=ADMIN_TOKEN,
        redis_url=redis_url,
        threads=1,
        bootstrap_keys=[{"api_key": api_key, "budget": 5, "output": "label", "name": "demo"}],
    )
    for expected_spent in (1, 2):  # the second app is a restart: the budget is not reset
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://v") as client:
                r = await client.post("/v1/classify", **npy_request(clips(1), api_key))
                assert r.status_code == 200 and r.json()["output"] == "label"
                assert r.json()["budget"]["spent"] == expected_spent


def test_bootstrap_keys_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from victim_server.settings import Settings

    monkeypatch.setenv("VIDSTEAL_ADMIN_TOKEN", "a-long-enough-secret-token")
    monkeypatch.setenv(
        "VIDSTEAL_BOOTSTRAP_KEYS", '[{"api_key": "vsk_k1_' + "x" * 20 + '", "budget": 9}]'
    )
    settings = Settings()  # type: ignore[call-arg]
    assert settings.bootstrap_keys[0].budget == 9
    monkeypatch.setenv("VIDSTEAL_BOOTSTRAP_KEYS", '[{"api_key": "short", "budget": 9}]')
    with pytest.raises(ValueError, match="api_key"):
        Settings()  # type: ignore[call-arg]
