"""Client CPU per Redis call of the victim's client (``connect_redis``), with and without hiredis.

redis-py parses replies in Python unless hiredis (C) is importable. Each sample is a fresh
process (``--child``) that makes ``--calls`` calls of a small script shaped like the victim's
(a few keys and arguments, a hash read back) and of a GET, on uvloop against a real
redis-server on 127.0.0.1, and reports its own CPU per call; ``off`` samples hide hiredis from
redis-py (``sys.modules['hiredis'] = None`` before it is imported). Off and on alternate, so a
change of the host's speed during the run falls on both. Medians of ``--pairs`` samples each.

Writes bench/results/redis_client_cost.json.  Run:
    .venv/bin/python bench/redis_client_cost.py [--pairs 5] [--calls 4000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# KEYS: two; ARGV: one. Sets a key and answers a hash: the shape of the ledger's and detectors'
# scripts (a status and a few fields).
_SCRIPT = "redis.call('SET', KEYS[1], ARGV[1]); return {1, redis.call('HGETALL', KEYS[2])}"


def child(url: str, calls: int, hiredis: bool) -> dict[str, Any]:
    """One sample, in this process: CPU per script call and per GET."""
    if not hiredis:
        sys.modules["hiredis"] = None  # type: ignore[assignment]
    import resource

    import uvloop
    from redis.utils import HIREDIS_AVAILABLE

    from victim_server.accounting.connection import connect_redis

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    async def measure() -> dict[str, float]:
        client = connect_redis(url)
        script = client.register_script(_SCRIPT)
        await client.hset("h", mapping={"queries": "10", "statistic": "0.5", "flagged": "1"})
        out: dict[str, float] = {}
        for name, call in (
            ("script", lambda: script(keys=["x", "h"], args=["v"])),
            ("get", lambda: client.get("x")),
        ):
            for _ in range(200):  # warm: connection open, script loaded
                await call()
            start = cpu()
            for _ in range(calls):
                await call()
            out[f"{name}_cpu_ms"] = 1000 * (cpu() - start) / calls
        await client.aclose()
        return out

    return {"hiredis": HIREDIS_AVAILABLE, **uvloop.run(measure())}


def main(pairs: int, calls: int) -> dict[str, Any]:
    from _common import median

    from vidsteal.processes import start_redis

    samples: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        redis = start_redis(Path(tmp) / "redis")
        try:
            for pair in range(pairs):
                for mode in ("off", "on"):
                    done = subprocess.run(
                        [
                            sys.executable,
                            __file__,
                            "--child",
                            mode,
                            "--url",
                            redis.url,
                            "--calls",
                            str(calls),
                        ],
                        check=True,
                        capture_output=True,
                        text=True,
                    )
                    sample = json.loads(done.stdout.strip().splitlines()[-1])
                    if sample["hiredis"] != (mode == "on"):
                        raise RuntimeError(f"hiredis {mode} sample ran with {sample['hiredis']}")
                    samples[mode].append(sample)
                    print(f"pair {pair + 1}/{pairs} {mode}: {sample}", flush=True)
        finally:
            redis.process.terminate()
    result: dict[str, Any] = {"pairs": pairs, "calls": calls, "samples": samples, "median": {}}
    for mode, rows in samples.items():
        result["median"][mode] = {
            key: round(median([row[key] for row in rows]), 4)
            for key in ("script_cpu_ms", "get_cpu_ms")
        }
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--child", choices=["off", "on"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.url, args.calls, hiredis=args.child == "on")))
        sys.exit(0)
    out = main(args.pairs, args.calls)
    m = out["median"]
    print(
        f"median client CPU per call: script {m['off']['script_cpu_ms']:.3f} ms without hiredis, "
        f"{m['on']['script_cpu_ms']:.3f} ms with; GET {m['off']['get_cpu_ms']:.3f} / "
        f"{m['on']['get_cpu_ms']:.3f} ms"
    )
    if not args.no_write:
        from _common import write_result

        print("wrote", write_result("redis_client_cost", out))
