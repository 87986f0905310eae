"""Per-query cost of PRADA as a key's history grows (writes bench/results/detection_cost.json).

For histories of 10, 1,000 and 10,000 earlier queries, the p50 time of one more query:

* ``reference``: the pure detector (``shared.detection.prada.observe``), state in memory;
* ``store_warm``: the victim's Redis-backed store (real redis-server on 127.0.0.1) when this
  process already holds the key's current state (one server process; lock + save);
* ``store_cold``: the same store when another process changed the state last, so it is loaded
  from Redis before the query (several server processes taking turns).

Embeddings are 7-dim vectors on the naturalness embedding's 20-level grid, predicted classes
uniform over 16. The bound (``max_set`` = 1024 members per class, ``max_distances`` = 512 pooled
per class) caps the cost: it must flatten between 1K and 10K. Every 10th query also runs the
Shapiro-Wilk test, so p50 is a plain query and p95 includes tests.

Run: .venv/bin/python bench/detection_cost.py
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, percentile, write_result

from shared.detection.prada import PradaConfig, PradaState, observe
from victim_server.detection.store import PradaStore
from vidsteal.processes import start_redis

DIM, CLASSES, LEVELS = 7, 16, 20
HISTORIES = (10, 1_000, 10_000)
SAMPLES = 200


def _stream(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    vectors = np.round(rng.random((n, DIM)) * LEVELS) / LEVELS
    return vectors.astype(np.float32), rng.integers(0, CLASSES, n)


def _summary(seconds: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(median(seconds) * 1e3, 4),
        "p95_ms": round(percentile(seconds, 0.95) * 1e3, 4),
    }


def reference_cost(history: int, config: PradaConfig) -> dict[str, float]:
    state = PradaState(dim=DIM)
    vectors, labels = _stream(history, history + SAMPLES)
    for v, c in zip(vectors[:history], labels[:history], strict=True):
        observe(state, config, v, int(c))
    times = []
    for v, c in zip(vectors[history:], labels[history:], strict=True):
        started = time.perf_counter()
        observe(state, config, v, int(c))
        times.append(time.perf_counter() - started)
    return _summary(times)


async def store_cost(redis: Redis, history: int, config: PradaConfig) -> dict[str, Any]:
    store = PradaStore(redis, dim=DIM)
    key = f"bench-{history}"
    await store.reset(key)
    vectors, labels = _stream(history, history + SAMPLES)
    for start in range(0, history, 500):  # fill the history in batches
        end = min(history, start + 500)
        await store.observe(key, config, vectors[start:end], labels[start:end])
    warm, cold = [], []
    for i in range(history, history + SAMPLES):
        cold_turn = i % 2 == 1
        if cold_turn:
            store._cache.clear()  # as if another server process had answered the last query
        started = time.perf_counter()
        await store.observe(key, config, vectors[i : i + 1], labels[i : i + 1])
        (cold if cold_turn else warm).append(time.perf_counter() - started)
    status = await store.status(key)
    return {
        "store_warm": _summary(warm),
        "store_cold": _summary(cold),
        "distances_pooled": status.distances,
    }


async def main() -> dict[str, Any]:
    config = PradaConfig(delta=0.85)
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        redis_process = start_redis(Path(tmp) / "redis")
        redis = Redis.from_url(redis_process.url, decode_responses=False)
        try:
            for history in HISTORIES:
                rows[str(history)] = {
                    "reference": reference_cost(history, config),
                    **(await store_cost(redis, history, config)),
                }
                print(history, rows[str(history)], flush=True)
        finally:
            await redis.aclose()
            redis_process.stop()
    return {
        "bound": {
            "max_set_per_class": config.max_set,
            "max_distances_per_class": config.max_distances,
        },
        "embedding_dim": DIM,
        "classes": CLASSES,
        "samples_per_history": SAMPLES,
        "histories": rows,
    }


if __name__ == "__main__":
    result = asyncio.run(main())
    print(f"wrote {write_result('detection_cost', result)}")
    print("\n| history | reference p50 (ms) | store warm p50 | store cold p50 | store cold p95 |")
    for history, row in result["histories"].items():
        print(
            f"| {history} | {row['reference']['p50_ms']} | {row['store_warm']['p50_ms']} | "
            f"{row['store_cold']['p50_ms']} | {row['store_cold']['p95_ms']} |"
        )
