"""Fidelity vs queries on the embedded victim, per query source and output mode, in one run
(writes bench/results/extraction.json and extraction.png).

Every attack runs the real attacker (``attacker.run.run_attack``) against a real uvicorn victim
and redis-server on 127.0.0.1, with a fresh key and a fresh answer cache, seed 0, a tiny3d
student, and 1,000 held-out SynthActions clips labelled by the victim through a separate key.
Budget points train a fresh student each (epochs capped at 160K clip-steps per point).

Also measured, in the same run: the attacker's paid-query rate divided by the victim's maximum
rate (8 concurrent clients posting 32-clip .npy bodies of pre-generated clips), and the speed-up
of a cached rerun of the query phase (0 paid).

Run: .venv/bin/python bench/extraction.py [--only NAME ...] [--scale 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write_result

from attacker.config import validate_config
from attacker.run import run_attack
from shared.codec import NPY_CONTENT_TYPE, encode_npy
from vidsteal.processes import start_redis, start_victim

LAYERED = {"kind": "stacked_affine", "layered": 0.8}
NATURAL = {"kind": "synthactions", "seed": 777, "labelled": True}
GOALS = {
    "probs-black-box@20000": ">= 0.90 top-1 agreement",
    "label-only@20000": ">= 0.80",
    "grey-box@10000": ">= 0.95",
    "paid_rate_over_victim_max": ">= 0.9",
    "cache_replay_speedup": ">= 20x, 0 paid",
}

ATTACKS: dict[str, dict[str, Any]] = {
    "probs-noise": {"output": "probs", "budget": 20000, "source": {"kind": "noise"}},
    "probs-stacked-affine": {"output": "probs", "budget": 20000, "source": LAYERED},
    "topk5-stacked-affine": {"output": "topk", "top_k": 5, "budget": 20000, "source": LAYERED},
    "label-stacked-affine": {
        "output": "label",
        "budget": 20000,
        "source": LAYERED,
        "train": {"lr": 1e-3},
    },
    "grey-box-5pct-labelled": {
        "output": "probs",
        "budget": 10000,
        "source": {
            "kind": "mix",
            "parts": [{"source": NATURAL, "weight": 0.05}, {"source": LAYERED, "weight": 0.95}],
        },
        "train": {"true_label_weight": 0.5},
    },
    "stealth-vs-prada": {
        "output": "probs",
        "budget": 20000,
        "source": LAYERED,
        "detection": {"detector": "prada", "action": "log"},
        "stealth": {"enabled": True, "natural": NATURAL, "target_w": 0.95},
        "train": {"true_label_weight": 0.5},
    },
}


def _config(
    name: str,
    spec: dict[str, Any],
    *,
    url: str,
    key: str,
    eval_key: str,
    redis_url: str,
    out: Path,
    scale: float,
    points: list[float],
) -> Any:
    budget = max(100, int(spec["budget"] * scale))
    return validate_config(
        {
            "name": name,
            "victim": {"url": url, "api_key": key, "eval_api_key": eval_key},
            "budget": budget,
            "seed": 0,
            "redis_url": redis_url,
            "out": str(out / name),
            "query": {"source": spec["source"], "batch_clips": 32, "concurrency": 4},
            "student": {"architecture": "tiny3d"},
            "train": {
                "epochs": 20,
                "max_clip_steps": int(160_000 * scale),
                "lr": 1.5e-3,
                **spec.get("train", {}),
            },
            "eval": {
                "source": {"kind": "synthactions", "seed": 424242, "labelled": True},
                "clips": 1000,
                "points": points,
            },
            "stealth": spec.get("stealth", {}),
        }
    )


def _key(url: str, admin: str, **plan: Any) -> dict[str, Any]:
    r = httpx.post(
        f"{url}/admin/keys", json=plan, headers={"Authorization": f"Bearer {admin}"}, timeout=30
    )
    r.raise_for_status()
    created: dict[str, Any] = r.json()
    return created


async def victim_max_rate(url: str, api_key: str, seconds: float = 10.0) -> float:
    clips = np.random.default_rng(0).integers(0, 256, size=(32, 16, 32, 32, 3), dtype=np.uint8)
    body = encode_npy(clips)
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": NPY_CONTENT_TYPE}
    done = 0
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        stop = time.perf_counter() + seconds
        started = time.perf_counter()

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                (
                    await client.post("/v1/classify", content=body, headers=headers)
                ).raise_for_status()
                done += 32

        await asyncio.gather(*[worker() for _ in range(8)])
        return done / (time.perf_counter() - started)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    admin = secrets.token_hex(16)
    results: dict[str, Any] = {"goals": GOALS, "scale": args.scale, "attacks": {}}
    previous = RESULTS / "extraction.json"
    if (args.only or args.rate_only) and previous.is_file():
        # A partial rerun keeps the other attacks' results from the last full run.
        results["attacks"] = json.loads(previous.read_text()).get("attacks", {})
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        redis = start_redis(tmp / "redis")
        victim = start_victim(redis.url, tmp / "victim.log", admin_token=admin)
        try:
            print("victim max rate ...", flush=True)
            rate_key = _key(victim.url, admin, budget=10**9, output="probs")["api_key"]
            max_rate = await victim_max_rate(victim.url, rate_key)
            print("attacker paid rate and cache replay ...", flush=True)
            speed = _config(
                "rate",
                {"budget": 5000, "source": {"kind": "noise"}},
                url=victim.url,
                key=_key(victim.url, admin, budget=5000)["api_key"],
                eval_key=_key(victim.url, admin, budget=1000, output="label")["api_key"],
                redis_url=redis.url,
                out=tmp / "runs",
                scale=1.0,
                points=[1.0],
            )
            speed = speed.model_copy(
                update={
                    "seed": 99,  # a stream of its own: the attacks must not find it cached
                    "train": speed.train.model_copy(update={"epochs": 1, "max_clip_steps": None}),
                    "eval": speed.eval.model_copy(update={"clips": 100, "points": [1.0]}),
                }
            )
            first = await run_attack(speed, show_progress=False)
            second = await run_attack(speed, show_progress=False)
            results["throughput"] = {
                "victim_max_clips_per_s": max_rate,
                "attacker_paid_clips_per_s": first["collect"]["paid"] / first["collect"]["seconds"],
                "paid_rate_over_victim_max": first["collect"]["paid"]
                / first["collect"]["seconds"]
                / max_rate,
                "query_phase_seconds_uncached": first["collect"]["seconds"],
                "query_phase_seconds_cached": second["collect"]["seconds"],
                "cache_replay_speedup": first["collect"]["seconds"] / second["collect"]["seconds"],
                "cached_rerun_paid": second["collect"]["paid"],
            }
            print(results["throughput"], flush=True)
            for name, spec in ATTACKS.items():
                if args.rate_only or (args.only and name not in args.only):
                    continue
                print(f"attack {name} ...", flush=True)
                plan = {
                    "budget": int(spec["budget"] * args.scale) + 10,
                    "output": spec["output"],
                    "top_k": spec.get("top_k", 5),
                }
                if "detection" in spec:
                    plan["detection"] = spec["detection"]
                key = _key(victim.url, admin, **plan)
                config = _config(
                    name,
                    spec,
                    url=victim.url,
                    key=key["api_key"],
                    eval_key=_key(victim.url, admin, budget=1000, output="label")["api_key"],
                    redis_url=redis.url,
                    out=tmp / "runs",
                    scale=args.scale,
                    points=args.points,
                )
                started = time.perf_counter()
                report = await run_attack(config, show_progress=False)
                entry = {
                    "output": spec["output"],
                    "source": spec["source"],
                    "points": report["points"],
                    "collect": report["collect"],
                    "detection": report["detection"],
                    "wall_seconds": round(time.perf_counter() - started, 1),
                }
                if "detection" in spec:
                    status = httpx.get(
                        f"{victim.url}/admin/keys/{key['key_id']}/detection",
                        headers={"Authorization": f"Bearer {admin}"},
                    ).json()
                    entry["victim_detection"] = status
                results["attacks"][name + args.tag] = entry
                write_result("extraction", results)  # partial results survive an interruption
                final = report["points"][-1]
                print(
                    f"  {final['queries']} queries: top-1 {final['top1_agreement']:.3f} "
                    f"top-5 {final['top5_agreement']:.3f} ({entry['wall_seconds']} s)",
                    flush=True,
                )
        finally:
            victim.stop()
            redis.stop()
    return results


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name, entry in results["attacks"].items():
        points = entry["points"]
        ax.plot(
            [p["queries"] for p in points], [p["top1_agreement"] for p in points], "o-", label=name
        )
    ax.set_xlabel("queries spent")
    ax.set_ylabel("top-1 fidelity (agreement with the victim)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(
        "Extraction of the embedded victim (tiny3d student, 1,000 held-out clips)", fontsize=9
    )
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 2))
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*", default=[])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every budget")
    parser.add_argument("--points", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    parser.add_argument("--tag", default="", help="suffix of the attack names in the results")
    parser.add_argument(
        "--rate-only",
        action="store_true",
        help="measure only the paid rate and cache replay, into the existing extraction.json",
    )
    arguments = parser.parse_args()
    out = asyncio.run(main(arguments))
    png = RESULTS / "extraction.png"
    plot(out, png)
    path = write_result("extraction", out)
    print("\n| attack | output | queries | top-1 | top-5 | accuracy |")
    for name, entry in out["attacks"].items():
        for p in entry["points"]:
            print(
                f"| {name} | {entry['output']} | {p['queries']} | {p['top1_agreement']:.3f} | "
                f"{p['top5_agreement']:.3f} | {p['accuracy']:.3f} |"
            )
    t = out["throughput"]
    print(
        f"paid rate / victim max rate: {t['paid_rate_over_victim_max']:.2f}; cache replay "
        f"speed-up {t['cache_replay_speedup']:.1f}x with {t['cached_rerun_paid']} paid"
    )
    print(f"wrote {path}")
