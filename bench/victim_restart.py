"""A victim killed (SIGKILL) mid-attack and restarted seconds later (issue 13.3, end to end).

Real parts only: redis-server (AOF everysec, as in compose), the victim as a uvicorn process on
127.0.0.1, and the attacker's own ``run_attack`` over real HTTP. When the attacker has been
charged for ``--kill-at`` queries the victim gets ``kill -9`` (in-flight requests die with it);
a new victim process on the same port starts ``--restart-after`` seconds later. The attack must
ride that out inside its retry window and, in the same run:

- finish its budget exactly (``collect.clips == budget``, ``stopped_by == "target"``);
- report as ``paid`` what the victim charged (the key's ``spent`` in Redis);
- keep every paid answer: the transfer set holds ``budget`` records, all of them paid, every one
  also in the answer cache, and the cache holds no answer that is not in the transfer set.

Training is not what is measured: one cheap epoch (``--epochs``) and a small evaluation set.
The record goes to ``bench/results/victim_restart.json`` (replaced whole).

    nice -n 10 .venv/bin/python bench/victim_restart.py --budget 3000 --kill-at 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

from attacker.client.cache import CACHE_PREFIX
from attacker.collect import CollectStats
from attacker.config import load_config
from attacker.data import TransferSet
from attacker.run import RunHooks, run_attack
from shared.hashing import cache_key
from vidsteal.processes import REPO, VictimProcess, start_redis, start_victim

ADMIN_TOKEN = "bench-admin-token-0123456789abcdef"
EXAMPLE = REPO / "examples" / "blackbox_noise.yaml"
START_TIMEOUT_S = 600.0  # a victim's start-up on a loaded shared machine


class VictimRestarter:
    """Kills the victim once the attack has paid ``kill_at`` queries; restarts it later."""

    def __init__(
        self,
        victim: VictimProcess,
        redis_url: str,
        logs: Path,
        *,
        kill_at: int,
        delay_s: float,
        env: dict[str, str],
    ) -> None:
        self.victim = victim
        self.env = env
        self.redis_url = redis_url
        self.logs = logs
        self.kill_at = kill_at
        self.delay_s = delay_s
        self.restarted: list[VictimProcess] = []
        self.events: dict[str, float] = {}
        self.paid_at_kill: int | None = None
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()

    def _now(self) -> float:
        return round(time.monotonic() - self._started, 3)

    def on_collect(self, stats: CollectStats) -> None:
        if self.paid_at_kill is not None or stats.paid < self.kill_at:
            return
        self.paid_at_kill = stats.paid
        self.victim.process.kill()  # SIGKILL: no graceful shutdown, in-flight requests die
        self.victim.process.wait()
        self.events["killed_s"] = self._now()
        self._thread = threading.Thread(target=self._restart, daemon=True)
        self._thread.start()

    def _restart(self) -> None:
        time.sleep(self.delay_s)
        self.events["restart_started_s"] = self._now()
        self.restarted.append(
            start_victim(
                self.redis_url,
                self.logs / "victim-2.log",
                admin_token=ADMIN_TOKEN,
                port=self.victim.port,
                extra_env=self.env,
                timeout_s=START_TIMEOUT_S,
            )
        )
        self.events["restart_ready_s"] = self._now()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=180)

    def stop(self) -> None:
        self.victim.stop()
        for victim in self.restarted:
            victim.stop()


async def _create_key(url: str, budget: int, output: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        response = await client.post(
            "/admin/keys",
            json={"budget": budget, "output": output, "name": f"restart-{output}"},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
    response.raise_for_status()
    created: dict[str, Any] = response.json()
    return created


async def _cache_check(redis_url: str, identity: str, hashes: list[str]) -> dict[str, int]:
    """How many transfer-set hashes have a cached answer, and how many cached answers exist."""
    store = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        keys = [f"{CACHE_PREFIX}:{cache_key(identity, h)}" for h in hashes]
        present = 0
        for chunk in _chunks(keys, 500):
            present += int(await store.exists(*chunk))
        cached = 0
        async for _ in store.scan_iter(f"{CACHE_PREFIX}:*", count=1000):
            cached += 1
        return {"transfer_hashes_cached": int(present), "cache_entries": cached}
    finally:
        await store.aclose()


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


async def _spent(redis_url: str, key_id: str) -> int:
    store = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return int(await store.hget(f"vs:{{{key_id}}}:key", "spent") or 0)
    finally:
        await store.aclose()


async def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    redis = start_redis(work / "redis", appendonly=True)
    env = {"VIDSTEAL_THREADS": os.environ.get("VIDSTEAL_THREADS", "1")}
    if args.abandoned_after_s is not None:
        env["VIDSTEAL_ABANDONED_AFTER_S"] = str(args.abandoned_after_s)
    victim = start_victim(
        redis.url,
        work / "victim-1.log",
        admin_token=ADMIN_TOKEN,
        extra_env=env,
        timeout_s=START_TIMEOUT_S,
    )
    restarter = VictimRestarter(
        victim, redis.url, work, kill_at=args.kill_at, delay_s=args.restart_after, env=env
    )
    try:
        attack = await _create_key(victim.url, args.budget, "probs")
        evaluation = await _create_key(victim.url, args.eval_clips, "label")
        overrides = {
            "victim.url": victim.url,
            "victim.api_key": attack["api_key"],
            "victim.eval_api_key": evaluation["api_key"],
            "budget": args.budget,
            "redis_url": redis.url,
            "out": str(work / "run"),
            "train.epochs": args.epochs,
            "eval.clips": args.eval_clips,
            "eval.points": [1.0],
            "query.batch_clips": args.batch_clips,
            "query.concurrency": args.concurrency,
        }
        config = load_config(EXAMPLE, overrides)
        started = time.perf_counter()
        report = await run_attack(
            config, hooks=RunHooks(on_collect=restarter.on_collect), show_progress=False
        )
        wall = time.perf_counter() - started
        restarter.join()
        transfer = TransferSet(work / "run" / "transfer")
        hashes = [r.clip_hash for r in transfer.records]
        spent = await _spent(redis.url, attack["key_id"])
        eval_spent = await _spent(redis.url, evaluation["key_id"])
        cache = await _cache_check(redis.url, transfer.manifest.victim["identity"], hashes)
    finally:
        restarter.stop()
        redis.stop()
    collect = report["collect"]
    paid_records = sum(r.paid for r in transfer.records)
    checks = {
        "restarted": bool(restarter.restarted),
        "budget_finished": collect["clips"] == args.budget and collect["stopped_by"] == "target",
        "paid_equals_victim_charge": collect["paid"] == spent,
        "spent_equals_budget": spent == args.budget,
        "transfer_set_holds_every_paid_answer": len(transfer) == spent == paid_records
        and len(set(hashes)) == len(hashes),
        "every_transfer_answer_cached": cache["transfer_hashes_cached"] == len(hashes),
        "no_cached_answer_outside_the_transfer_set": cache["cache_entries"]
        == len(hashes) + eval_spent,
    }
    return {
        "what": "victim kill -9 mid-attack, restarted later on the same port; one attack run",
        "command": " ".join(["bench/victim_restart.py", *sys.argv[1:]]),
        "config": {
            **{k: v for k, v in vars(args).items() if k != "keep"},
            "example": str(EXAMPLE.relative_to(REPO)),
            "victim_abandoned_after_s": args.abandoned_after_s or "default (30)",
            "redis": "redis-server, appendonly yes, appendfsync everysec",
        },
        "kill": {
            "paid_at_kill": restarter.paid_at_kill,
            **restarter.events,
            "down_s": round(
                restarter.events.get("restart_ready_s", float("nan"))
                - restarter.events.get("killed_s", float("nan")),
                3,
            ),
        },
        "attacker": {
            "paid": collect["paid"],
            "clips": collect["clips"],
            "cache_hits": collect["cache_hits"],
            "requests": collect["requests"],
            "retries": collect["retries"],
            "stopped_by": collect["stopped_by"],
            "replayed": collect["extra"].get("replayed", 0),
            "collect_seconds": collect["seconds"],
            "run_seconds": round(wall, 1),
        },
        "victim": {"spent": spent, "eval_spent": eval_spent},
        "transfer_set": {
            "records": len(transfer),
            "paid_records": paid_records,
            "distinct_hashes": len(set(hashes)),
        },
        "cache": cache,
        "checks": checks,
        "ok": all(checks.values()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=3000)
    parser.add_argument("--kill-at", type=int, default=1000, help="paid queries before kill -9")
    parser.add_argument("--restart-after", type=float, default=8.0, help="seconds down")
    parser.add_argument("--abandoned-after-s", type=float, default=None)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--eval-clips", type=int, default=128)
    parser.add_argument("--batch-clips", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="vidsteal-restart-"))
    result = asyncio.run(measure(args, work))
    if not args.no_write:
        print(write_result("victim_restart", result))
    print(json.dumps({k: result[k] for k in ("kill", "attacker", "victim", "checks")}, indent=1))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
