"""Victim serving cost, from the server process's own CPU accounting (2-core CPU machine).

The load generator shares the machine's cores, so wall-clock throughput mixes client and server
costs (and, here, other people's processes). The figures that decide are CPU-seconds read from
``/proc/PID/stat`` of the victim process (all its threads; the load generator excluded) per clip
answered, against the bare model's CPU-seconds per clip (preprocess + forward, batches of 32,
measured in this process with the server's thread and malloc settings). Each of ``--runs`` runs
measures, in turn:

1. the bare model at batch 32;
2. 32-clip ``.npy`` requests at concurrency 8 against the micro-batching victim (defaults);
3. 1-clip requests at concurrency 8 against the same victim;
4. 1-clip requests at concurrency 8 against a victim with batching off (max batch 1).

Efficiency = bare CPU per clip / server CPU per clip (targets: >= 0.95 for 32-clip requests,
>= 0.80 for 1-clip requests). The bare model runs at batch 32; for 1-clip requests, whose
micro-batches hold only a few clips, it is also measured at the mean micro-batch the server ran
in that load (its ``vidsteal_batch_clips`` histogram), ``efficiency_1_clip_same_batch``, and so
for 32-clip requests, which the server joins into batches of 64 (``..._32_clip_same_batch``):
the model's own cost per clip changes with the batch (here it is lower in a batch of 8 than of
32), which the batch-32 figure charges to, or credits to, the server. Every efficiency is
measured against two bare models: the eager model as built (``efficiency_*``) and the frozen
trace the server runs on the CPU by default (``efficiency_traced_*``, the server's own overhead;
victim_server/inference/tracing.py);
batched / unbatched = clips per second of (3) over (4), wall clock
(target >= 3x). Medians over the runs. redis-server's CPU per clip is reported beside it.

Non-model overhead: a victim process serving a no-op model (``bench/_noop_victim.py``), 1-clip
requests at concurrency 1 with an ``Idempotency-Key`` from a key with the OOD detector on: the
server's own request-latency histogram (``vidsteal_request_seconds``, ASGI entry to response
end: auth, decode, reserve, batcher, detection, answer, commit) gives the p50; /proc gives server
and redis-server CPU per request (target: p50 <= 1 ms per clip), and redis-server's read count
its round trips per request (the reserve, then the OOD update and the commit in one pipeline).
Then the same for 32-clip requests (3x ``--requests-32`` of them), whose p50 is also given per
clip: a 1-clip request is the worst case of the per-clip figure, a 32-clip one a batching
client's.

Writes bench/results/victim_throughput.json.  Run:
    OMP_NUM_THREADS=1 .venv/bin/python bench/victim_throughput.py [--runs 5]
"""

from __future__ import annotations

import os

# The server sets this before torch loads (victim_server/__main__.py); the bare model here must
# run under the same OpenMP settings to be a fair baseline.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import asyncio
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, percentile, write_result
from _proc_cpu import process_cpu_seconds

from shared.codec import NPY_CONTENT_TYPE, encode_npy
from shared.memory import reuse_freed_memory
from shared.synthactions import SynthActions
from victim_server.inference.runner import serving_threads
from vidsteal.processes import (
    REPO,
    VictimProcess,
    free_port,
    start_redis,
    start_victim,
)

THREADS = serving_threads(0)
# The server keeps freed memory for reuse (its default, reuse_freed_memory); the bare model here
# runs under the same malloc settings, as under the same thread settings.
REUSE_FREED_MEMORY = reuse_freed_memory()
CLIPS = SynthActions(seed=5).batch(0, 64)[0]
CONCURRENCY = 8


def bare_forward(*, traced: bool = False) -> Callable[[np.ndarray], torch.Tensor]:
    """The embedded victim's preprocess + forward pass, outside any server, warmed up: the eager
    model, or (``traced``) the frozen trace the server serves on the CPU by default."""
    from victim_server.inference.preprocess import preprocess
    from victim_server.inference.tracing import eager_forward, traced_forward
    from victim_server.models import create_model, model_config

    torch.set_num_threads(THREADS)
    model = create_model("embedded").eval()
    spec = model_config(model).input
    run = (
        traced_forward(model, spec, with_features=True)
        if traced
        else eager_forward(model, with_features=True)
    )
    if run is None:
        raise RuntimeError("the embedded model did not trace")

    @torch.inference_mode()
    def forward(clips: np.ndarray) -> torch.Tensor:
        return run(preprocess(clips, spec))[0]

    for _ in range(3):  # the trace optimises itself over its first passes
        forward(CLIPS[:32])
    return forward


def bare_cpu_per_clip(
    forward: Callable[[np.ndarray], torch.Tensor], *, batch: int = 32, batches: int = 24
) -> dict[str, float]:
    """CPU-seconds per clip of this process (all threads) over ``batches`` forward passes."""
    clips = CLIPS[:batch]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(batches):
        forward(clips)
    n = batch * batches
    return {
        "cpu_ms_per_clip": 1000 * (time.process_time() - cpu0) / n,
        "wall_ms_per_clip": 1000 * (time.perf_counter() - wall0) / n,
    }


def efficiency_names(yardstick_name: str) -> dict[str, str]:
    """Result keys of one yardstick: the eager model's keep the file's first names."""
    prefix = "" if yardstick_name == "eager" else f"{yardstick_name}_"
    return {
        "model": "bare_model" if yardstick_name == "eager" else f"{yardstick_name}_model",
        "32": f"efficiency_{prefix}32_clip",
        "32_same": f"efficiency_{prefix}32_clip_same_batch",
        "1": f"efficiency_{prefix}1_clip",
        "1_same": f"efficiency_{prefix}1_clip_same_batch",
    }


def yardstick(
    name: str,
    forward: Callable[[np.ndarray], torch.Tensor],
    bare_32: dict[str, float],
    *,
    big: dict[str, Any],
    small: dict[str, Any],
    big_batch: int,
    same_batch: int,
) -> dict[str, Any]:
    """Efficiencies of one load against one bare model: at batch 32 and at the server's batch."""
    keys = efficiency_names(name)
    at_big = bare_cpu_per_clip(forward, batch=big_batch, batches=max(8, 768 // big_batch))
    at_same = bare_cpu_per_clip(forward, batch=same_batch, batches=max(8, 256 // same_batch))
    server_32 = big["server_cpu_ms_per_clip"]
    server_1 = small["server_cpu_ms_per_clip"]
    return {
        f"{keys['model']}_batch_32": bare_32,
        f"{keys['model']}_at_1_clip_batch_size": {"batch": same_batch, **at_same},
        f"{keys['model']}_at_32_clip_batch_size": {"batch": big_batch, **at_big},
        keys["32"]: bare_32["cpu_ms_per_clip"] / server_32,
        keys["32_same"]: at_big["cpu_ms_per_clip"] / server_32,
        keys["1"]: bare_32["cpu_ms_per_clip"] / server_1,
        keys["1_same"]: at_same["cpu_ms_per_clip"] / server_1,
    }


async def load(
    url: str,
    api_key: str,
    *,
    clips_per_request: int,
    concurrency: int,
    requests: int,
    server_pid: int,
    redis_pid: int,
    redis_url: str | None = None,
    time_limit_s: float = 240.0,
) -> dict[str, float]:
    """``requests`` classify calls (fresh Idempotency-Key each), ``concurrency`` at a time;
    CPU of the server and redis-server processes over exactly that window, and with
    ``redis_url`` the reads redis-server made from its sockets (its round trips) per request."""
    body = encode_npy(CLIPS[:clips_per_request])
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": NPY_CONTENT_TYPE}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def one() -> None:
            started = time.perf_counter()
            response = await client.post(
                "/v1/classify",
                content=body,
                headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
            )
            response.raise_for_status()
            latencies.append(time.perf_counter() - started)

        for _ in range(2):  # warm-up: every connection open, pools filled
            await asyncio.gather(*[one() for _ in range(concurrency)])
        latencies.clear()
        left = requests
        deadline = time.perf_counter() + time_limit_s

        async def worker() -> None:
            nonlocal left
            while left > 0 and time.perf_counter() < deadline:
                left -= 1
                await one()

        batches0 = batch_histogram((await client.get("/metrics")).text)
        reads0 = redis_reads(redis_url)
        server0, redis0 = process_cpu_seconds(server_pid), process_cpu_seconds(redis_pid)
        wall0 = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        wall = time.perf_counter() - wall0
        server_cpu = process_cpu_seconds(server_pid) - server0
        redis_cpu = process_cpu_seconds(redis_pid) - redis0
        reads = redis_reads(redis_url) - reads0 - 1  # less the second INFO's own read
        batches1 = batch_histogram((await client.get("/metrics")).text)
    clips = len(latencies) * clips_per_request
    per_request = {"redis_reads_per_request": reads / len(latencies)} if redis_url else {}
    return {
        **per_request,
        "requests": len(latencies),
        "clips": clips,
        "clips_per_s": clips / wall,
        "server_cpu_ms_per_clip": 1000 * server_cpu / clips,
        "redis_cpu_ms_per_clip": 1000 * redis_cpu / clips,
        "p50_ms": 1000 * median(latencies),
        "p95_ms": 1000 * percentile(latencies, 0.95),
        # clips per forward pass the server ran in this window (its vidsteal_batch_clips)
        "mean_batch_clips": (batches1[0] - batches0[0]) / max(1.0, batches1[1] - batches0[1]),
    }


def redis_reads(url: str | None) -> int:
    """redis-server's ``total_reads_processed``: one per batch of commands it read from a
    socket, so a pipeline counts once (0 without a URL)."""
    if url is None:
        return 0
    client = redis.Redis.from_url(url)
    try:
        return int(client.info("stats")["total_reads_processed"])
    finally:
        client.close()


def batch_histogram(metrics_text: str) -> tuple[float, float]:
    """(sum, count) of the server's clips-per-micro-batch histogram."""
    values = {"sum": 0.0, "count": 0.0}
    for line in metrics_text.splitlines():
        for part in values:
            if line.startswith(f"vidsteal_batch_clips_{part} "):
                values[part] = float(line.split()[-1])
    return values["sum"], values["count"]


def create_key(url: str, admin: str, budget: int, detector: str = "none") -> str:
    response = httpx.post(
        f"{url}/admin/keys",
        json={"budget": budget, "output": "probs", "detection": {"detector": detector}},
        headers={"Authorization": f"Bearer {admin}"},
        timeout=30,
    )
    response.raise_for_status()
    key: str = response.json()["api_key"]
    return key


Buckets = list[tuple[float, float]]  # (upper bound, cumulative count), ascending


def histogram_buckets(metrics_text: str, name: str, route: str) -> Buckets:
    """The cumulative buckets of one route's Prometheus histogram."""
    buckets: Buckets = []
    for line in metrics_text.splitlines():
        if line.startswith(f"{name}_bucket{{") and f'route="{route}"' in line:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
    return sorted(buckets)


def buckets_between(before: Buckets, after: Buckets) -> Buckets:
    """What was observed between two scrapes (a bucket missing before counted 0 then)."""
    earlier = dict(before)
    return [(bound, count - earlier.get(bound, 0.0)) for bound, count in after]


def histogram_quantile(buckets: Buckets, q: float) -> dict[str, float]:
    """Quantile of a histogram, interpolated linearly inside its bucket."""
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            share = (rank - lower_count) / max(count - lower_count, 1e-12)
            upper = bound if bound != float("inf") else lower_bound
            return {
                "seconds": lower_bound + share * (upper - lower_bound),
                "bucket_upper_seconds": bound,
                "count": total,
            }
        lower_bound, lower_count = bound, count
    return {"seconds": float("nan"), "bucket_upper_seconds": float("nan"), "count": total}


def fraction_within(buckets: Buckets, bound: float) -> float:
    return dict(buckets)[bound] / buckets[-1][1]


async def noop_overhead(
    redis_url: str, redis_pid: int, tmp: Path, requests_1: int, requests_32: int
) -> dict[str, Any]:
    """The request path with a no-op model, one request at a time, in a real uvicorn process:
    1-clip requests, then 32-clip requests (the same clips as the 32-clip load above)."""
    admin = secrets.token_hex(16)
    port = free_port()
    log_path = tmp / "noop.log"
    env = {
        **os.environ,
        "VIDSTEAL_ADMIN_TOKEN": admin,
        "VIDSTEAL_REDIS_URL": redis_url,
        "VIDSTEAL_PORT": str(port),
        "VIDSTEAL_MAX_WAIT_MS": "0",
    }
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, str(REPO / "bench" / "_noop_victim.py")],
            cwd=REPO,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    victim = VictimProcess(process=process, port=port, log_path=log_path, env=env)
    name, route = "vidsteal_request_seconds", "/v1/classify"
    loads: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{victim.url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"no-op victim did not start:\n{victim.log()[-3000:]}")
            time.sleep(0.2)
        key = create_key(victim.url, admin, 10**9, detector="ood")
        for clips, requests in ((1, requests_1), (32, requests_32)):
            before = histogram_buckets(
                httpx.get(f"{victim.url}/metrics", timeout=30).text, name, route
            )
            measured = await load(
                victim.url,
                key,
                clips_per_request=clips,
                concurrency=1,
                requests=requests,
                server_pid=process.pid,
                redis_pid=redis_pid,
                redis_url=redis_url,
            )
            after = histogram_buckets(
                httpx.get(f"{victim.url}/metrics", timeout=30).text, name, route
            )
            # The load's 2 warm-up requests are in the difference too; negligible.
            observed = buckets_between(before, after)
            p50 = histogram_quantile(observed, 0.5)
            loads[f"{clips}_clip"] = {
                "requests": measured["requests"],
                "server_side_p50_ms": 1000 * p50["seconds"],
                "server_side_p50_bucket_upper_ms": 1000 * p50["bucket_upper_seconds"],
                "server_side_p50_ms_per_clip": 1000 * p50["seconds"] / clips,
                "server_side_within_1ms": fraction_within(observed, 0.001),
                "server_cpu_ms_per_clip": measured["server_cpu_ms_per_clip"],
                "redis_cpu_ms_per_clip": measured["redis_cpu_ms_per_clip"],
                "client_seen_p50_ms": measured["p50_ms"],
                # reserve, then the OOD update and the Idempotency-Key commit in one write
                "redis_round_trips_per_request": measured["redis_reads_per_request"],
            }
    finally:
        victim.stop()
    return {
        **loads["1_clip"],  # the headline: 1-clip requests (the target's figure)
        "per_request_size": loads,
        "detector": "ood",
        "idempotency_key": True,
        "max_wait_ms": 0,
    }


def start(redis_url: str, tmp: Path, name: str, admin: str, env: dict[str, str]) -> VictimProcess:
    return start_victim(redis_url, tmp / f"{name}.log", admin_token=admin, extra_env=env)


async def main(runs: int, requests_1: int, requests_32: int) -> dict[str, Any]:
    # The eager model (what the user brought) and its frozen trace (what the server runs on the
    # CPU by default): efficiency against each; the trace's is the server's own overhead.
    forwards = {"eager": bare_forward(), "traced": bare_forward(traced=True)}
    admin = secrets.token_hex(16)
    per_run: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        redis = start_redis(tmp / "redis")
        redis_pid = redis.process.pid
        batched = start(
            redis.url,
            tmp,
            "batched",
            admin,
            {"VIDSTEAL_MAX_BATCH_CLIPS": "64"},  # default wait: 20 ms (announced + expected)
        )
        unbatched = start(
            redis.url,
            tmp,
            "unbatched",
            admin,
            {"VIDSTEAL_MAX_BATCH_CLIPS": "1", "VIDSTEAL_MAX_WAIT_MS": "0"},
        )
        try:
            key_b = create_key(batched.url, admin, 10**9)
            key_u = create_key(unbatched.url, admin, 10**9)
            for run in range(runs):
                print(f"run {run + 1}/{runs} ...", flush=True)
                bare_32 = {name: bare_cpu_per_clip(f) for name, f in forwards.items()}
                common: dict[str, Any] = {"concurrency": CONCURRENCY, "redis_pid": redis_pid}
                big = await load(
                    batched.url,
                    key_b,
                    clips_per_request=32,
                    requests=requests_32,
                    server_pid=batched.process.pid,
                    **common,
                )
                small = await load(
                    batched.url,
                    key_b,
                    clips_per_request=1,
                    requests=requests_1,
                    server_pid=batched.process.pid,
                    **common,
                )
                single = await load(
                    unbatched.url,
                    key_u,
                    clips_per_request=1,
                    requests=requests_1,
                    server_pid=unbatched.process.pid,
                    **common,
                )
                big_batch = max(1, round(big["mean_batch_clips"]))
                same_batch = max(1, round(small["mean_batch_clips"]))
                entry: dict[str, Any] = {
                    "http_32_clip_requests": big,
                    "http_1_clip_batched": small,
                    "http_1_clip_unbatched": single,
                    "batched_over_unbatched": small["clips_per_s"] / single["clips_per_s"],
                    "batched_over_unbatched_cpu": single["server_cpu_ms_per_clip"]
                    / small["server_cpu_ms_per_clip"],
                }
                for name, forward in forwards.items():
                    entry.update(
                        yardstick(
                            name,
                            forward,
                            bare_32[name],
                            big=big,
                            small=small,
                            big_batch=big_batch,
                            same_batch=same_batch,
                        )
                    )
                print(
                    "  server CPU per clip: 32-clip {:.2f}, 1-clip {:.2f} (batch {}), unbatched"
                    " {:.2f} ms; batched/unbatched {:.2f}x".format(
                        big["server_cpu_ms_per_clip"],
                        small["server_cpu_ms_per_clip"],
                        same_batch,
                        single["server_cpu_ms_per_clip"],
                        entry["batched_over_unbatched"],
                    ),
                    flush=True,
                )
                for name in forwards:
                    e = efficiency_names(name)
                    print(
                        "  against the {} model (batch 32: {:.2f} ms/clip): efficiency 32-clip"
                        " {:.2f} ({:.2f} at the server's batch, {}), 1-clip {:.2f} ({:.2f})".format(
                            name,
                            bare_32[name]["cpu_ms_per_clip"],
                            entry[e["32"]],
                            entry[e["32_same"]],
                            big_batch,
                            entry[e["1"]],
                            entry[e["1_same"]],
                        ),
                        flush=True,
                    )
                per_run.append(entry)
        finally:
            batched.stop()
            unbatched.stop()
        print("no-op model overhead ...", flush=True)
        overhead = await noop_overhead(
            redis.url, redis_pid, tmp, requests_1=requests_1, requests_32=requests_32 * 3
        )
        redis.stop()

    def med(field: str) -> float:
        return median([run[field] for run in per_run])

    return {
        "threads": THREADS,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "reuse_freed_memory": REUSE_FREED_MEMORY,
        "config": {
            "runs": runs,
            "concurrency": CONCURRENCY,
            "requests_1_clip": requests_1,
            "requests_32_clip": requests_32,
            "bare_batch": 32,
            "batched_victim": {"max_batch_clips": 64, "max_wait_ms": "default (20)"},
            "unbatched_victim": {"max_batch_clips": 1, "max_wait_ms": 0},
            "clip_shape": list(CLIPS.shape[1:]),
            "victim_serves": "the traced model (trace_model, its default on the CPU)",
            "yardsticks": {
                "eager": "the model as built (bare_model_*, efficiency_*)",
                "traced": "its frozen trace, as served (traced_model_*, efficiency_traced_*)",
            },
        },
        "runs": per_run,
        "median": {
            **{
                f"{efficiency_names(name)['model']}_cpu_ms_per_clip": median(
                    [
                        r[f"{efficiency_names(name)['model']}_batch_32"]["cpu_ms_per_clip"]
                        for r in per_run
                    ]
                )
                for name in forwards
            },
            **{
                key: med(key)
                for name in forwards
                for key in list(efficiency_names(name).values())[1:]
            },
            "mean_batch_clips_1_clip": median(
                [r["http_1_clip_batched"]["mean_batch_clips"] for r in per_run]
            ),
            "batched_over_unbatched": med("batched_over_unbatched"),
            "batched_over_unbatched_cpu": med("batched_over_unbatched_cpu"),
        },
        "overhead_noop_model": overhead,
        "targets": {
            "efficiency_32_clip": ">= 0.95",
            "efficiency_1_clip": ">= 0.80",
            "batched_over_unbatched": ">= 3",
            "overhead_server_side_p50_ms": "<= 1",
        },
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--requests-1", type=int, default=400, help="1-clip requests per load")
    parser.add_argument("--requests-32", type=int, default=40, help="32-clip requests per load")
    parser.add_argument("--no-write", action="store_true", help="print only (exploration)")
    args = parser.parse_args()
    out = asyncio.run(main(args.runs, args.requests_1, args.requests_32))
    m = out["median"]
    o = out["overhead_noop_model"]
    for name, prefix in (("eager", ""), ("traced", "traced_")):
        model_key = "bare_model" if name == "eager" else "traced_model"
        print(
            f"medians of {args.runs} runs against the {name} model "
            f"({m[f'{model_key}_cpu_ms_per_clip']:.2f} ms CPU/clip at batch 32): efficiency "
            f"32-clip {m[f'efficiency_{prefix}32_clip']:.2f} "
            f"({m[f'efficiency_{prefix}32_clip_same_batch']:.2f} at the server's batch), 1-clip "
            f"{m[f'efficiency_{prefix}1_clip']:.2f} "
            f"({m[f'efficiency_{prefix}1_clip_same_batch']:.2f})"
        )
    print(
        f"batched/unbatched {m['batched_over_unbatched']:.2f}x wall, "
        f"{m['batched_over_unbatched_cpu']:.2f}x CPU"
    )
    print(
        f"no-op model: server-side p50 {o['server_side_p50_ms']:.2f} ms "
        f"({100 * o['server_side_within_1ms']:.0f}% within 1 ms); CPU per clip server "
        f"{o['server_cpu_ms_per_clip']:.2f} ms + redis {o['redis_cpu_ms_per_clip']:.2f} ms; "
        f"{o['redis_round_trips_per_request']:.2f} Redis round trips per request"
    )
    o32 = o["per_request_size"]["32_clip"]
    print(
        f"no-op model, 32-clip requests: server-side p50 {o32['server_side_p50_ms']:.2f} ms "
        f"(bucket up to {o32['server_side_p50_bucket_upper_ms']:.2f}), "
        f"{o32['server_side_p50_ms_per_clip']:.3f} ms per clip; CPU per clip server "
        f"{o32['server_cpu_ms_per_clip']:.3f} ms + redis {o32['redis_cpu_ms_per_clip']:.3f} ms"
    )
    if not args.no_write:
        print(f"wrote {write_result('victim_throughput', out)}")
