"""Victim throughput, measured as ratios inside one run (2-core CPU machine).

1. HTTP throughput of a real uvicorn victim (binary .npy bodies of 32 clips, concurrency 8)
   divided by the bare model's batched throughput (preprocess + forward, batches of 64) in this
   process. Target >= 0.85.
2. Batched vs unbatched server: single-clip requests at concurrency 8 against a victim with the
   micro-batcher (max batch 64, 4 ms wait) and one with batching off (max batch 1). Target >= 3x.
3. Non-model overhead per clip: decode (.npy) + accounting (Lua reserve + idempotency commit on
   a real redis-server), p50; and the whole request path with a no-op model in process. Target
   <= 3 ms.

Writes bench/results/victim_throughput.json.  Run: .venv/bin/python bench/victim_throughput.py
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, percentile, write_result

from shared.codec import NPY_CONTENT_TYPE, ClipLimits, decode_npy, encode_npy
from shared.synthactions import SynthActions
from vidsteal.processes import start_redis, start_victim

THREADS = os.cpu_count() or 2
CLIPS = SynthActions(seed=5).batch(0, 64)[0]


def bare_forward() -> Callable[[np.ndarray], torch.Tensor]:
    """The embedded victim's preprocess + forward pass, outside any server, warmed up."""
    from victim_server.inference.preprocess import preprocess
    from victim_server.models import create_model, model_config

    torch.set_num_threads(THREADS)
    model = create_model("embedded")
    spec = model_config(model).input

    @torch.inference_mode()
    def forward(clips: np.ndarray) -> torch.Tensor:
        out: torch.Tensor = model(preprocess(clips, spec))
        return out

    forward(CLIPS)
    return forward


def bare_model_throughput(
    forward: Callable[[np.ndarray], torch.Tensor], seconds: float = 8.0, batch: int = 64
) -> float:
    clips = CLIPS[:batch]
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        forward(clips)
        done += batch
    return done / (time.perf_counter() - started)


def bare_model_single_clip_ms(
    forward: Callable[[np.ndarray], torch.Tensor], repeats: int = 200
) -> float:
    """p50 latency of one clip alone through preprocess + forward (no batching)."""
    times = []
    for i in range(repeats):
        clip = CLIPS[i % len(CLIPS) : i % len(CLIPS) + 1]
        started = time.perf_counter()
        forward(clip)
        times.append(time.perf_counter() - started)
    return 1000 * median(times)


async def http_throughput(
    url: str, api_key: str, *, clips_per_request: int, concurrency: int, seconds: float
) -> dict[str, float]:
    body = encode_npy(CLIPS[:clips_per_request])
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": NPY_CONTENT_TYPE}
    latencies: list[float] = []
    done = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        for _ in range(3):  # warm-up
            (await client.post("/v1/classify", content=body, headers=headers)).raise_for_status()
        stop = time.perf_counter() + seconds
        started = time.perf_counter()

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                response = await client.post("/v1/classify", content=body, headers=headers)
                response.raise_for_status()
                latencies.append(time.perf_counter() - t0)
                done += clips_per_request

        await asyncio.gather(*[worker() for _ in range(concurrency)])
        elapsed = time.perf_counter() - started
    return {
        "clips_per_s": done / elapsed,
        "requests": len(latencies),
        "p50_ms": 1000 * median(latencies),
        "p95_ms": 1000 * percentile(latencies, 0.95),
    }


def create_key(url: str, admin: str, budget: int) -> str:
    response = httpx.post(
        f"{url}/admin/keys",
        json={"budget": budget, "output": "probs"},
        headers={"Authorization": f"Bearer {admin}"},
    )
    response.raise_for_status()
    key: str = response.json()["api_key"]
    return key


class NullVideoModel(torch.nn.Module):
    """Answers zeros instantly: the request path without the model's compute."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.model_config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], self.model_config.num_classes)


async def overhead_per_clip(redis_url: str, samples: int = 400) -> dict[str, float]:
    """Decode + accounting timed directly, and the full request path with a no-op model."""
    from shared.schemas import KeyCreate
    from victim_server.accounting.connection import connect_redis
    from victim_server.accounting.keys import KeyStore
    from victim_server.accounting.ledger import Ledger
    from victim_server.app import create_app
    from victim_server.settings import Settings

    body = encode_npy(CLIPS[:1])
    redis = connect_redis(redis_url)
    key = await KeyStore(redis).create(KeyCreate(budget=10**9))
    ledger = Ledger(redis)
    decode_s, account_s = [], []
    for i in range(samples):
        t0 = time.perf_counter()
        decode_npy(body, limits=ClipLimits())
        t1 = time.perf_counter()
        await ledger.reserve(
            key.key_id, 1, idempotency_key=f"k{i}", fingerprint="f", request_id=str(i)
        )
        await ledger.commit(
            key.key_id, idempotency_key=f"k{i}", fingerprint="f", response_json="{}"
        )
        t2 = time.perf_counter()
        decode_s.append(t1 - t0)
        account_s.append(t2 - t1)
    await redis.aclose()

    admin = secrets.token_hex(16)
    from victim_server.models import create_model, model_config

    config = model_config(create_model("embedded"))
    app = create_app(
        Settings(admin_token=admin, redis_url=redis_url, threads=1),  # type: ignore[arg-type]
        model=NullVideoModel(config),
    )
    path_s = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://v") as client:
            created = await client.post(
                "/admin/keys", json={"budget": 10**9}, headers={"Authorization": f"Bearer {admin}"}
            )
            headers = {
                "Authorization": f"Bearer {created.json()['api_key']}",
                "Content-Type": NPY_CONTENT_TYPE,
            }
            for i in range(samples):
                t0 = time.perf_counter()
                r = await client.post(
                    "/v1/classify", content=body, headers={**headers, "Idempotency-Key": f"i{i}"}
                )
                path_s.append(time.perf_counter() - t0)
                r.raise_for_status()
    return {
        "decode_p50_ms": 1000 * median(decode_s),
        "accounting_p50_ms": 1000 * median(account_s),
        "decode_plus_accounting_p50_ms": 1000
        * median([a + b for a, b in zip(decode_s, account_s, strict=True)]),
        "request_path_noop_model_p50_ms": 1000 * median(path_s),
    }


async def main() -> dict[str, Any]:
    results: dict[str, Any] = {"threads": THREADS}
    print("bare model ...", flush=True)
    forward = bare_forward()
    bare = bare_model_throughput(forward)
    results["bare_model_clips_per_s"] = bare
    results["bare_model_ms_per_clip_batched"] = 1000 / bare
    results["bare_model_single_clip_p50_ms"] = bare_model_single_clip_ms(forward)
    admin = secrets.token_hex(16)
    with tempfile.TemporaryDirectory() as tmp:
        redis = start_redis(Path(tmp) / "redis")
        batched = start_victim(
            redis.url,
            Path(tmp) / "batched.log",
            admin_token=admin,
            extra_env={"VIDSTEAL_MAX_BATCH_CLIPS": "64", "VIDSTEAL_MAX_WAIT_MS": "4"},
        )
        try:
            key = create_key(batched.url, admin, 10**9)
            print("HTTP, 32 clips per request ...", flush=True)
            results["http_32_clip_requests"] = await http_throughput(
                batched.url, key, clips_per_request=32, concurrency=8, seconds=12
            )
            print("HTTP, 1 clip per request, batched ...", flush=True)
            results["http_1_clip_batched"] = await http_throughput(
                batched.url, key, clips_per_request=1, concurrency=8, seconds=10
            )
        finally:
            batched.stop()
        unbatched = start_victim(
            redis.url,
            Path(tmp) / "unbatched.log",
            admin_token=admin,
            extra_env={"VIDSTEAL_MAX_BATCH_CLIPS": "1", "VIDSTEAL_MAX_WAIT_MS": "0"},
        )
        try:
            key = create_key(unbatched.url, admin, 10**9)
            print("HTTP, 1 clip per request, unbatched ...", flush=True)
            results["http_1_clip_unbatched"] = await http_throughput(
                unbatched.url, key, clips_per_request=1, concurrency=8, seconds=10
            )
        finally:
            unbatched.stop()
        print("overhead ...", flush=True)
        results["overhead"] = await overhead_per_clip(redis.url)
        redis.stop()
    http = results["http_32_clip_requests"]["clips_per_s"]
    results["ratios"] = {
        "http_over_bare_model": http / bare,
        "batched_over_unbatched": results["http_1_clip_batched"]["clips_per_s"]
        / results["http_1_clip_unbatched"]["clips_per_s"],
    }
    results["targets"] = {
        "http_over_bare_model": ">= 0.85",
        "batched_over_unbatched": ">= 3",
        "decode_plus_accounting_p50_ms": "<= 3",
    }
    return results


if __name__ == "__main__":
    out = asyncio.run(main())
    path = write_result("victim_throughput", out)
    r = out["ratios"]
    o = out["overhead"]
    print(
        f"HTTP / bare model throughput: {r['http_over_bare_model']:.2f} "
        f"({out['http_32_clip_requests']['clips_per_s']:.0f} vs "
        f"{out['bare_model_clips_per_s']:.0f} clips/s)"
    )
    print(
        f"forward per clip: {out['bare_model_ms_per_clip_batched']:.2f} ms in batches of 64, "
        f"{out['bare_model_single_clip_p50_ms']:.2f} ms alone (p50)"
    )
    print(f"batched / unbatched server (1-clip requests): {r['batched_over_unbatched']:.2f}x")
    print(
        f"non-model overhead per clip p50: decode {o['decode_p50_ms']:.3f} ms + accounting "
        f"{o['accounting_p50_ms']:.3f} ms = {o['decode_plus_accounting_p50_ms']:.3f} ms; "
        f"whole request path with a no-op model {o['request_path_noop_model_p50_ms']:.2f} ms"
    )
    print(f"wrote {path}")
