"""Hostile classify bodies (issue 13.4): each is a problem+json 4xx, charges nothing, keeps the
worker alive, and is refused before any costly decoding when the key has nothing left."""

from __future__ import annotations

import gzip
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers.services import LiveVictim, start_victim
from helpers.victim import ADMIN_HEADERS, budget_of, clips, create_key

from shared.codec import encode_json, encode_npy

JSON = {"Content-Type": "application/json"}
MiB = 1 << 20


def _auth(api_key: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", **headers}


def _nested_lists_json(size: int, *, poison: bool) -> bytes:
    """A nested 'clips' list of about ``size`` bytes; with ``poison`` its last value is a
    string (the 25 MB body of the issue)."""
    one = json.dumps(np.zeros((16, 32, 32, 3), np.uint8).tolist(), separators=(",", ":"))
    count = max(1, size // len(one))
    body = '{"clips":[' + ",".join([one] * count) + "]}"
    if poison:
        body = body[: -len("0]]]]]}")] + '"x"]]]]]}'
    return body.encode()


def _problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, object] = response.json()
    return body


async def test_deeply_nested_json_is_400_not_500(victim_app: httpx.AsyncClient) -> None:
    key = await create_key(victim_app, budget=5)
    body = b'{"clips":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = await victim_app.post(
        "/v1/classify", content=body, headers=_auth(key["api_key"], **JSON)
    )
    _problem(response, 400)
    deep_list = b"[" * 100_000 + b"]" * 100_000
    response = await victim_app.post(
        "/v1/classify", content=deep_list, headers=_auth(key["api_key"], **JSON)
    )
    _problem(response, 400)
    assert (await budget_of(victim_app, key["api_key"]))["spent"] == 0


async def test_a_large_nested_list_body_is_413_without_parsing(
    victim_app: httpx.AsyncClient,
) -> None:
    key = await create_key(victim_app, budget=5)
    body = _nested_lists_json(25 * MiB, poison=True)
    response = await victim_app.post(
        "/v1/classify", content=body, headers=_auth(key["api_key"], **JSON)
    )
    problem = _problem(response, 413)
    assert "base64" in str(problem["detail"])
    assert (await budget_of(victim_app, key["api_key"]))["spent"] == 0


async def test_a_large_base64_json_body_is_answered(victim_app: httpx.AsyncClient) -> None:
    key = await create_key(victim_app, budget=200)
    batch = clips(40)  # ~2.6 MB of base64: over the 1 MiB whole-parse limit
    body = json.dumps(encode_json(batch)).encode()
    assert len(body) > MiB
    response = await victim_app.post(
        "/v1/classify", content=body, headers=_auth(key["api_key"], **JSON)
    )
    assert response.status_code == 200, response.text[:300]
    assert len(response.json()["results"]) == 40


async def test_a_spent_key_is_refused_before_its_body_is_decoded(
    victim_app: httpx.AsyncClient,
) -> None:
    key = await create_key(victim_app, budget=1)
    ok = await victim_app.post(
        "/v1/classify",
        content=encode_npy(clips(1)),
        headers=_auth(key["api_key"], **{"Content-Type": "application/x-npy"}),
    )
    assert ok.status_code == 200
    bomb = gzip.compress(b"\0" * (64 * MiB))
    for body, headers in (
        (b"[" * 100_000, JSON),
        (bomb, {"Content-Type": "application/x-npy", "Content-Encoding": "gzip"}),
    ):
        response = await victim_app.post(
            "/v1/classify", content=body, headers=_auth(key["api_key"], **headers)
        )
        problem = _problem(response, 429)
        assert problem["type"] == "urn:vidsteal:problem:budget-exhausted"


async def test_compressed_bombs_are_refused_at_their_declared_size(
    victim_app: httpx.AsyncClient,
) -> None:
    key = await create_key(victim_app, budget=5)
    npy = encode_npy(clips(1))
    bomb = gzip.compress(npy + b"\0" * (32 * MiB))  # header says 1 clip, 32 MiB follow
    response = await victim_app.post(
        "/v1/classify",
        content=bomb,
        headers=_auth(
            key["api_key"], **{"Content-Type": "application/x-npy", "Content-Encoding": "gzip"}
        ),
    )
    _problem(response, 413)
    raw = gzip.compress(b"\0" * (64 * MiB))
    response = await victim_app.post(
        "/v1/classify",
        content=raw,
        headers=_auth(
            key["api_key"],
            **{
                "Content-Type": "application/octet-stream",
                "Content-Encoding": "gzip",
                "X-Clip-Shape": "1,16,32,32,3",
            },
        ),
    )
    _problem(response, 413)
    assert (await budget_of(victim_app, key["api_key"]))["spent"] == 0


async def test_multipart_parts_spanning_many_slices_decode_whole(
    victim_app: httpx.AsyncClient,
) -> None:
    """The multipart parser is handed the body in 1 MiB slices; parts larger than a slice, and
    a part boundary inside a slice, still decode exactly."""
    key = await create_key(victim_app, budget=100)
    first, second = clips(30, seed=1), clips(25, seed=2)  # 1.5 MB and 1.2 MB .npy parts
    files = [
        ("file", ("a.npy", encode_npy(first), "application/x-npy")),
        ("file", ("b.npy", encode_npy(second), "application/x-npy")),
    ]
    response = await victim_app.post("/v1/classify", files=files, headers=_auth(key["api_key"]))
    assert response.status_code == 200, response.text[:300]
    assert len(response.json()["results"]) == 55
    garbage = np.random.default_rng(3).bytes(3 * MiB)
    response = await victim_app.post(
        "/v1/classify",
        files=[("file", ("c.mp4", garbage, "video/mp4"))],
        headers=_auth(key["api_key"]),
    )
    assert 400 <= response.status_code < 500, response.text[:300]
    assert response.headers["content-type"].startswith("application/problem+json")
    assert (await budget_of(victim_app, key["api_key"]))["spent"] == 55


async def test_an_incompressible_gzip_body_is_decoded(victim_app: httpx.AsyncClient) -> None:
    key = await create_key(victim_app, budget=100)
    batch = clips(60)  # 2.9 MB of .npy, several 1 MiB input slices of gzip
    body = gzip.compress(encode_npy(batch), compresslevel=1)
    response = await victim_app.post(
        "/v1/classify",
        content=body,
        headers=_auth(
            key["api_key"], **{"Content-Type": "application/x-npy", "Content-Encoding": "gzip"}
        ),
    )
    assert response.status_code == 200, response.text[:300]
    assert len(response.json()["results"]) == 60


async def test_a_large_batch_with_an_idempotency_key_is_charged_once(
    victim_app: httpx.AsyncClient,
) -> None:
    """A 1.5 MB batch is read, decoded and fingerprinted on the event loop; retries match it."""
    key = await create_key(victim_app, budget=100)
    batch = clips(30)  # 1.5 MB
    headers = _auth(
        key["api_key"], **{"Content-Type": "application/x-npy", "Idempotency-Key": "big-1"}
    )
    first = await victim_app.post("/v1/classify", content=encode_npy(batch), headers=headers)
    again = await victim_app.post("/v1/classify", content=encode_npy(batch), headers=headers)
    assert first.status_code == again.status_code == 200, again.text[:300]
    assert again.headers.get("idempotent-replayed") == "true"
    other = await victim_app.post(
        "/v1/classify", content=encode_npy(clips(30, seed=9)), headers=headers
    )
    _problem(other, 422)
    assert (await budget_of(victim_app, key["api_key"]))["spent"] == 30


# --------------------------------------------------------------------------- live server


def _memory_mib(pid: int, field: str) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"{field}:\s+(\d+) kB", status)
    assert match is not None
    return int(match.group(1)) / 1024


def _reset_peak(pid: int) -> float:
    """Reset the process's peak RSS (Linux clear_refs 5); return its RSS now."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return _memory_mib(pid, "VmRSS")


class _HealthProbe:
    """Polls /healthz every 20 ms in a thread; records the slowest answer."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.slowest_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                client.get(f"{self.url}/healthz")
                self.slowest_s = max(self.slowest_s, time.perf_counter() - started)
                time.sleep(0.02)

    def __enter__(self) -> _HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def live_victim_one_thread(redis_url: str, tmp_path: Path) -> Iterator[LiveVictim]:
    victim = start_victim(redis_url, tmp_path / "victim.log")
    try:
        yield victim
    finally:
        victim.stop()


def _hostile_bodies() -> list[tuple[str, bytes, dict[str, str]]]:
    b64 = encode_json(np.zeros((1, 200, 256, 256, 3), np.uint8))  # 52 MB of base64
    return [
        ("nested lists 60 MB", _nested_lists_json(60 * MiB, poison=True), JSON),
        ("nesting 100k", b"[" * 100_000 + b"]" * 100_000, JSON),
        ("base64 json 52 MB", json.dumps(b64).encode(), JSON),
        (
            "gzip bomb -> 1 GiB npy",
            gzip.compress(b"\0" * (1 << 30), compresslevel=1),
            {"Content-Type": "application/x-npy", "Content-Encoding": "gzip"},
        ),
    ]


@pytest.mark.slow
def test_no_body_up_to_64_mb_costs_300_mib_or_stalls_healthz(
    live_victim_one_thread: LiveVictim,
) -> None:
    victim = live_victim_one_thread
    with httpx.Client(base_url=victim.url, timeout=120) as client:
        key = client.post(
            "/admin/keys", json={"budget": 100, "name": "hostile"}, headers=ADMIN_HEADERS
        ).json()
        client.post(  # warm-up: first inference, thread pools started
            "/v1/classify",
            content=encode_npy(clips(1)),
            headers=_auth(key["api_key"], **{"Content-Type": "application/x-npy"}),
        )
        pid = victim.process.pid
        report = []
        for name, body, headers in _hostile_bodies():
            assert len(body) <= 64 * MiB, name
            before = _reset_peak(pid)
            with _HealthProbe(victim.url) as probe:
                response = client.post(
                    "/v1/classify", content=body, headers=_auth(key["api_key"], **headers)
                )
            grew = _memory_mib(pid, "VmHWM") - before
            report.append(
                f"{name}: {response.status_code}, peak RSS +{grew:.0f} MiB, "
                f"slowest /healthz {probe.slowest_s * 1000:.0f} ms"
            )
            assert response.status_code < 500, response.text[:300]
            assert grew < 300, report[-1]
        print("\n" + "\n".join(report))
        assert victim.process.poll() is None
    if os.environ.get("VIDSTEAL_FAULT_REPORT"):
        Path(os.environ["VIDSTEAL_FAULT_REPORT"]).write_text("\n".join(report) + "\n")
