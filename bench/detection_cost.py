"""Per-query cost of each detector as a key's history grows (bench/results/detection_cost.json).

For histories of 10, 1,000 and 10,000 earlier queries, the p50 time of one more query, for

* ``prada`` (PRADA on the victim's 256-dim penultimate features, at most 256 set members per
  class) and ``prada_stats`` (7-dim naturalness statistics on a 20-level grid, 1,024 members):
  - ``reference``: the pure detector (``shared.detection.prada.observe``), state in memory;
  - ``store_warm``: the victim's Redis-backed store (real redis-server on 127.0.0.1) when this
    process already holds the key's current state (one server process; lock + save);
  - ``store_cold``: the same store when another process changed the state last, so it is
    loaded from Redis first (several server processes taking turns);
* ``ood``: the OOD monitor's CUSUM script (one Redis call; no per-process state).
* ``seat``: the SEAT detector (committed encoder): ``state`` is the per-key update for clips
  already embedded (read the key's ring of 1,024 embeddings, distances, one Redis script);
  ``with_encoder`` adds the encoder's pass over the request's clips (SynthActions 16x32x32
  clips), the detector's own pass when it is driven alone. Served, the encoder runs once over
  the inference micro-batch instead (as PRADA's features come with the forward pass):
  ``seat_encoder_per_clip`` is the encoder's CPU per clip at the micro-batch sizes the server
  forms (1-clip requests; about 5 clips at concurrency 8, up to 32 under load), so a served
  1-clip request of a seat key costs ``state`` + the encoder at its batch's size.

Each query is one request of one clip (the worst case per clip); ``batch10_per_clip`` is the
store's time per clip for requests of 10 clips. Store costs are CPU time per clip (this
process's ``time.process_time``, p50, plus redis-server's CPU from ``INFO cpu``, mean) beside
the wall p50: on a shared, loaded machine the wall time is mostly waiting for a core.
Predicted classes are uniform over 16. Every 10th PRADA query also runs the Shapiro-Wilk
test, so p50 is a plain query and p95 includes tests. Embedding the clips is not included
(features come with the forward pass; the statistics embedding costs about as much as
preprocessing).

Run: nice -n 10 .venv/bin/python bench/detection_cost.py
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

from shared.detection.ood import OodCalibration
from shared.detection.prada import PradaConfig, PradaState, observe
from shared.synthactions import SynthActions
from victim_server.detection.base import Observation
from victim_server.detection.ood import OodDetector
from victim_server.detection.registry import FEATURE_SET_BOUND, STATISTICS_SET_BOUND
from victim_server.detection.seat import RING, SeatDetector
from victim_server.detection.seat_encoder import load_seat_model
from victim_server.detection.store import PradaStore
from vidsteal.processes import start_redis

CLASSES, LEVELS = 16, 20
HISTORIES = (10, 1_000, 10_000)
SAMPLES = 200
ENCODER_BATCHES = (1, 4, 8, 32)  # clips per inference micro-batch
PRADA_KINDS = {
    "prada": {"dim": 256, "max_set": FEATURE_SET_BOUND, "grid": False},
    "prada_stats": {"dim": 7, "max_set": STATISTICS_SET_BOUND, "grid": True},
}


def _stream(seed: int, n: int, dim: int, grid: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if grid:
        vectors = np.round(rng.random((n, dim)) * LEVELS) / LEVELS
    else:
        vectors = rng.normal(size=(n, dim))
    return vectors.astype(np.float32), rng.integers(0, CLASSES, n)


def _summary(seconds: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(median(seconds) * 1e3, 4),
        "p95_ms": round(percentile(seconds, 0.95) * 1e3, 4),
    }


async def _redis_cpu(redis: Redis) -> float:
    """redis-server's CPU seconds so far (user + system)."""
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


class _Clock:
    """Wall and CPU time of one measured call: this process's CPU (time.process_time) plus,
    over a series, redis-server's CPU. On a shared, loaded machine the wall time mostly
    measures waiting for a core; CPU time is what the detector costs."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.clips = 0
        self.redis_cpu = 0.0

    async def time(self, redis: Redis, call: Any, clips: int) -> None:
        before_redis = await _redis_cpu(redis)
        wall, cpu = time.perf_counter(), time.process_time()
        await call()
        self.wall.append((time.perf_counter() - wall) / clips)
        self.cpu.append((time.process_time() - cpu) / clips)
        self.redis_cpu += await _redis_cpu(redis) - before_redis
        self.clips += clips

    def summary(self) -> dict[str, float]:
        return {
            "wall_p50_ms": round(median(self.wall) * 1e3, 4),
            "cpu_p50_ms": round(median(self.cpu) * 1e3, 4),
            "cpu_p95_ms": round(percentile(self.cpu, 0.95) * 1e3, 4),
            "redis_cpu_mean_ms": round(self.redis_cpu / max(self.clips, 1) * 1e3, 4),
        }


def reference_cost(history: int, config: PradaConfig, dim: int, grid: bool) -> dict[str, float]:
    state = PradaState(dim=dim)
    vectors, labels = _stream(history, history + SAMPLES, dim, grid)
    for v, c in zip(vectors[:history], labels[:history], strict=True):
        observe(state, config, v, int(c))
    times = []
    for v, c in zip(vectors[history:], labels[history:], strict=True):
        started = time.perf_counter()
        observe(state, config, v, int(c))
        times.append(time.perf_counter() - started)
    return _summary(times)


async def store_cost(
    redis: Redis, kind: str, history: int, config: PradaConfig, dim: int, grid: bool
) -> dict[str, Any]:
    store = PradaStore(redis, dim=dim, namespace=kind)
    key = f"bench-{history}"
    await store.reset(key)
    vectors, labels = _stream(history, history + 2 * SAMPLES + 10 * SAMPLES // 10, dim, grid)
    for start in range(0, history, 500):  # fill the history in batches
        end = min(history, start + 500)
        await store.observe(key, config, vectors[start:end], labels[start:end])
    warm, cold, batched = _Clock(), _Clock(), _Clock()
    i = history
    for turn in range(SAMPLES):
        if turn % 2:
            store._cache.clear()  # as if another server process had answered the last query
        part = slice(i, i + 1)
        await (cold if turn % 2 else warm).time(
            redis, lambda p=part: store.observe(key, config, vectors[p], labels[p]), 1
        )
        i += 1
    for _ in range(SAMPLES // 10):
        part = slice(i, i + 10)
        await batched.time(
            redis, lambda p=part: store.observe(key, config, vectors[p], labels[p]), 10
        )
        i += 10
    status = await store.status(key)
    return {
        "store_warm": warm.summary(),
        "store_cold": cold.summary(),
        "store_warm_batch10_per_clip": batched.summary(),
        "distances_pooled": status.distances,
    }


async def ood_cost(redis: Redis, history: int) -> dict[str, Any]:
    calibration = OodCalibration.fit(np.linspace(-10.0, -3.0, 1000))
    detector = OodDetector(redis, calibration)
    key = f"bench-{history}"
    await detector.reset(key)
    rng = np.random.default_rng(history)

    def batch(n: int) -> Observation:
        logits = rng.normal(scale=3.0, size=(n, CLASSES)).astype(np.float32)
        return Observation(np.zeros((n, 1, 1, 1, 3), np.uint8), logits, None)

    for start in range(0, history, 500):
        await detector.observe(key, batch(min(500, history - start)))
    single, batched = _Clock(), _Clock()
    for _ in range(SAMPLES):
        one = batch(1)
        await single.time(redis, lambda b=one: detector.observe(key, b), 1)
    for _ in range(SAMPLES // 10):
        ten = batch(10)
        await batched.time(redis, lambda b=ten: detector.observe(key, b), 10)
    return {"store": single.summary(), "store_batch10_per_clip": batched.summary()}


async def seat_cost(redis: Redis, history: int, clips: np.ndarray) -> dict[str, Any]:
    detector = SeatDetector(redis)
    detector.check()
    assert detector.model is not None
    key = f"bench-{history}"
    await detector.reset(key)
    rng = np.random.default_rng(history)

    def unit(n: int) -> np.ndarray:
        v = rng.normal(size=(n, detector.model.encoder.dim)).astype(np.float32)  # type: ignore[union-attr]
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    for start in range(0, history, 500):
        await detector.observe_embeddings(key, unit(min(500, history - start)))
    state, full, state10, full10 = _Clock(), _Clock(), _Clock(), _Clock()
    for i in range(SAMPLES):
        one = unit(1)
        await state.time(redis, lambda v=one: detector.observe_embeddings(key, v), 1)
        clip = _observation(clips[i % len(clips) : i % len(clips) + 1])
        await full.time(redis, lambda b=clip: detector.observe(key, b), 1)
    for i in range(SAMPLES // 10):
        ten = unit(10)
        await state10.time(redis, lambda v=ten: detector.observe_embeddings(key, v), 10)
        part = _observation(clips[(10 * i) % len(clips) :][:10])
        await full10.time(redis, lambda b=part: detector.observe(key, b), 10)
    return {
        "state": state.summary(),
        "state_batch10_per_clip": state10.summary(),
        "with_encoder": full.summary(),
        "with_encoder_batch10_per_clip": full10.summary(),
        "queries": (await detector.status(key)).queries,
    }


def encoder_cost(clips: np.ndarray) -> dict[str, dict[str, float]]:
    """The SEAT encoder's CPU (and wall) per clip for one pass over a micro-batch of each size
    (``SeatModel.embed``, what the model thread runs after the forward), p50 over passes."""
    model = load_seat_model()
    model.embed(clips[:8])  # warm up
    rows = {}
    for size in ENCODER_BATCHES:
        wall, cpu = [], []
        for i in range(max(20, SAMPLES // size)):
            batch = np.take(clips, np.arange(i * size, (i + 1) * size), axis=0, mode="wrap")
            started, cpu_started = time.perf_counter(), time.process_time()
            model.embed(batch)
            wall.append((time.perf_counter() - started) / size)
            cpu.append((time.process_time() - cpu_started) / size)
        rows[str(size)] = {
            "cpu_p50_ms": round(median(cpu) * 1e3, 4),
            "cpu_p95_ms": round(percentile(cpu, 0.95) * 1e3, 4),
            "wall_p50_ms": round(median(wall) * 1e3, 4),
        }
        print("seat encoder batch", size, rows[str(size)], flush=True)
    return rows


def _observation(clips: np.ndarray) -> Observation:
    return Observation(clips, np.zeros((len(clips), CLASSES), np.float32), None)


async def main() -> dict[str, Any]:
    rows: dict[str, Any] = {kind: {} for kind in (*PRADA_KINDS, "ood", "seat")}
    clips, _ = SynthActions(seed=4711).batch(0, 100)
    encoder = encoder_cost(clips)
    with tempfile.TemporaryDirectory() as tmp:
        redis_process = start_redis(Path(tmp) / "redis")
        redis = Redis.from_url(redis_process.url, decode_responses=False)
        try:
            for kind, spec in PRADA_KINDS.items():
                config = PradaConfig(delta=0.85, max_set=int(spec["max_set"]))
                dim, grid = int(spec["dim"]), bool(spec["grid"])
                for history in HISTORIES:
                    rows[kind][str(history)] = {
                        "reference": reference_cost(history, config, dim, grid),
                        **(await store_cost(redis, kind, history, config, dim, grid)),
                    }
                    print(kind, history, rows[kind][str(history)], flush=True)
            for history in HISTORIES:
                rows["ood"][str(history)] = await ood_cost(redis, history)
                print("ood", history, rows["ood"][str(history)], flush=True)
            for history in HISTORIES:
                rows["seat"][str(history)] = await seat_cost(redis, history, clips)
                print("seat", history, rows["seat"][str(history)], flush=True)
        finally:
            await redis.aclose()
            redis_process.stop()
    return {
        "bounds": {
            kind: {"dim": spec["dim"], "max_set_per_class": spec["max_set"]}
            for kind, spec in PRADA_KINDS.items()
        },
        "max_distances_per_class": PradaConfig().max_distances,
        "seat_ring": RING,
        "classes": CLASSES,
        "samples_per_history": SAMPLES,
        "detectors": rows,
        "seat_encoder_per_clip": encoder,
    }


if __name__ == "__main__":
    result = asyncio.run(main())
    print(f"wrote {write_result('detection_cost', result)}")
    print(
        "\n| detector | history | reference p50 (ms) | CPU p50 per clip, warm | cold (seat: "
        "with encoder) "
        "| batch 10 | + redis-server CPU per clip (warm) | wall p50 warm |"
    )
    for kind in (*PRADA_KINDS, "ood", "seat"):
        for history, row in result["detectors"][kind].items():
            warm = row.get("store_warm", row.get("store", row.get("state")))
            cold = row.get("store_cold", row.get("with_encoder", warm))
            ten = row.get(
                "store_warm_batch10_per_clip",
                row.get("store_batch10_per_clip", row.get("state_batch10_per_clip")),
            )
            ref = row["reference"]["p50_ms"] if "reference" in row else "-"
            print(
                f"| {kind} | {history} | {ref} | {warm['cpu_p50_ms']} | {cold['cpu_p50_ms']} | "
                f"{ten['cpu_p50_ms']} | {warm['redis_cpu_mean_ms']} | {warm['wall_p50_ms']} |"
            )
    state = result["detectors"]["seat"][str(HISTORIES[-1])]["state"]
    print(
        f"\nseat served, 1-clip requests at {HISTORIES[-1]} history: state CPU p50 "
        f"{state['cpu_p50_ms']} ms + redis {state['redis_cpu_mean_ms']} ms per clip, plus the "
        "encoder's CPU per clip in the inference micro-batch:"
    )
    print("| micro-batch (clips) | encoder CPU p50 per clip (ms) | state + encoder (ms) |")
    for size, row in result["seat_encoder_per_clip"].items():
        total = state["cpu_p50_ms"] + state["redis_cpu_mean_ms"] + row["cpu_p50_ms"]
        print(f"| {size} | {row['cpu_p50_ms']} | {total:.2f} |")
