"""A paid collection and its cached replay, against a real victim and a real redis-server.

Runs the attack's collect stage (attacker/stages/collect.py: source -> content hash -> Redis
cache -> victim for misses -> transfer set) twice into one run directory: first paying for
``--queries`` clips, then again with every answer in the cache, as a rerun of a finished attack
does. Reports the wall time (and this process's CPU time) of each, the ratio paid / replay
(target >= 20x), what the replay paid (target 0; checked on the victim's own budget too), and
how many transfer-set shards the replay linked instead of recompressing.

Writes bench/results/replay.json.  Run:
    OMP_NUM_THREADS=1 .venv/bin/python bench/replay.py [--queries 5000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, write_result

from attacker.client import VictimClient
from attacker.client.store import open_store
from attacker.config import AttackConfig
from attacker.stages.collect import collect_transfer_set
from vidsteal.processes import start_redis, start_victim

SOURCE = {"kind": "stacked_affine", "images": None, "layered": 0.8}


def create_key(url: str, admin: str, budget: int) -> str:
    response = httpx.post(
        f"{url}/admin/keys",
        json={"budget": budget, "output": "probs"},
        headers={"Authorization": f"Bearer {admin}"},
        timeout=30,
    )
    response.raise_for_status()
    key: str = response.json()["api_key"]
    return key


async def spent(url: str, api_key: str) -> int:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        response = await client.get("/v1/budget", headers={"Authorization": f"Bearer {api_key}"})
        response.raise_for_status()
        return int(response.json()["spent"])


async def collect_once(config: AttackConfig) -> dict[str, Any]:
    store = open_store(config.redis_url)
    try:
        async with VictimClient(config.victim.url, config.victim.api_key) as client:
            info = await client.model_info()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            stats = await collect_transfer_set(config, client, info, store, show_progress=False)
            wall = time.perf_counter() - wall0
            cpu = time.process_time() - cpu0
    finally:
        await store.aclose()
    return {
        "seconds": wall,
        "cpu_seconds": cpu,
        "clips": stats.clips,
        "paid": stats.paid,
        "cache_hits": stats.cache_hits,
        "requests": stats.requests,
        "shards_reused": stats.extra.get("shards_reused", 0),
        "replayed_from_previous_run": stats.extra.get("replayed_from_previous_run", 0),
    }


async def main(queries: int, repeats: int) -> dict[str, Any]:
    admin = secrets.token_hex(16)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        redis = start_redis(tmp / "redis")
        victim = start_victim(redis.url, tmp / "victim.log", admin_token=admin)
        try:
            for repeat in range(repeats):
                api_key = create_key(victim.url, admin, queries)  # a fresh key: a cold cache
                config = AttackConfig.model_validate(
                    {
                        "budget": queries,
                        "seed": repeat,
                        "redis_url": redis.url,
                        "out": str(tmp / f"run-{repeat}"),
                        "victim": {"url": victim.url, "api_key": api_key},
                        "query": {"source": SOURCE, "batch_clips": 32, "concurrency": 4},
                    }
                )
                print(f"repeat {repeat + 1}/{repeats}: paid collection ...", flush=True)
                paid = await collect_once(config)
                spent_after_paid = await spent(victim.url, api_key)
                print("  replay ...", flush=True)
                replay = await collect_once(config)
                spent_after_replay = await spent(victim.url, api_key)
                run = {
                    "paid_run": paid,
                    "replay": replay,
                    "victim_spent_after_paid": spent_after_paid,
                    "victim_spent_by_replay": spent_after_replay - spent_after_paid,
                    "paid_over_replay": paid["seconds"] / replay["seconds"],
                    "paid_over_replay_cpu": paid["cpu_seconds"] / replay["cpu_seconds"],
                }
                print(
                    f"  paid {paid['seconds']:.1f} s ({paid['paid']} paid), replay "
                    f"{replay['seconds']:.2f} s ({replay['paid']} paid, "
                    f"{replay['shards_reused']} shards linked): {run['paid_over_replay']:.1f}x",
                    flush=True,
                )
                runs.append(run)
        finally:
            victim.stop()
            redis.stop()
    return {
        "config": {
            "queries": queries,
            "repeats": repeats,
            "source": SOURCE,
            "batch_clips": 32,
            "concurrency": 4,
            "victim_threads": "default (one per core less one)",
        },
        "runs": runs,
        "median": {
            "paid_seconds": median([r["paid_run"]["seconds"] for r in runs]),
            "replay_seconds": median([r["replay"]["seconds"] for r in runs]),
            "paid_over_replay": median([r["paid_over_replay"] for r in runs]),
            "paid_over_replay_cpu": median([r["paid_over_replay_cpu"] for r in runs]),
        },
        "replay_paid_total": sum(r["replay"]["paid"] for r in runs),
        "victim_spent_by_replays": sum(r["victim_spent_by_replay"] for r in runs),
        "targets": {"paid_over_replay": ">= 20", "replay_paid": "0"},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only (exploration)")
    args = parser.parse_args()
    out = asyncio.run(main(args.queries, args.repeats))
    m = out["median"]
    print(
        f"median of {args.repeats}: paid {m['paid_seconds']:.1f} s, replay "
        f"{m['replay_seconds']:.2f} s: {m['paid_over_replay']:.1f}x wall "
        f"({m['paid_over_replay_cpu']:.1f}x attacker CPU); replays paid "
        f"{out['replay_paid_total']} (victim: {out['victim_spent_by_replays']})"
    )
    if not args.no_write:
        print(f"wrote {write_result('replay', out)}")
