"""What MAD and Adaptive Misinformation cost the thief (bench/results/defense_extraction.json).

One attack of ``bench/extraction.py`` (default ``probs-stacked-affine``) at ``--budget``
queries, run by the real attacker against one real uvicorn victim and redis-server on
127.0.0.1, once per answer policy: an undefended key, a key with prediction poisoning and a key
with adaptive misinformation (each its own key and answer-policy fingerprint, so the attacker's
cache shares no answer between them). The thief's agreement with the victim is measured by
``bench/extraction.py``'s evaluation (1,000 held-out SynthActions clips of seed 424242,
labelled through a separate, undefended key), so it is the fidelity of the clone to the real
victim, not to the defended answers. Same seed for every policy: same query stream, same
student initialisation. AM's ``tau`` is read from bench/results/defense_cost.json (calibrated
there on seed 9001 so that 5% of benign clips get mostly misinformation) unless given.

Run: OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/defense_extraction.py [--budget 2500]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import secrets
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write_result
from extraction import ATTACKS, EVAL_SOURCE, STUDENT, _key, attack_config, run_job

from vidsteal.processes import start_redis, start_victim


def am_tau(path: Path, fraction: float) -> float:
    """The AM tau that defense_cost.json calibrated for ``fraction`` of benign clips."""
    calibration = json.loads(path.read_text())["am_calibration"]
    taus = dict(zip(calibration["fractions"], calibration["taus"], strict=True))
    if fraction not in taus:
        raise SystemExit(f"{path} has no tau for fraction {fraction}: run bench/defense_cost.py")
    return float(taus[fraction])


def policies(args: argparse.Namespace, tau: float) -> dict[str, dict[str, Any]]:
    return {
        "none": {},
        f"mad_argmax_l1_{args.mad_epsilon}": {
            "prediction_poisoning": {"epsilon": args.mad_epsilon, "keep_argmax": True}
        },
        f"am_{round(100 * args.am_fraction)}pct": {
            "adaptive_misinformation": {"tau": tau, "nu": args.am_nu}
        },
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    tau = args.am_tau if args.am_tau is not None else am_tau(args.calibration, args.am_fraction)
    spec = ATTACKS[args.attack]
    scale = args.budget / spec["budget"]
    admin = secrets.token_hex(16)
    answers = policies(args, tau)
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        redis = start_redis(tmp / "redis")
        victim = start_victim(redis.url, tmp / "victim.log", admin_token=admin, timeout_s=300)
        try:
            jobs = []
            for name, defenses in answers.items():
                key = _key(
                    victim.url,
                    admin,
                    budget=args.budget + 10,
                    output=spec["output"],
                    top_k=spec.get("top_k", 5),
                    defenses=defenses,
                )
                eval_key = _key(victim.url, admin, budget=1100, output="label")
                config = attack_config(
                    f"{args.attack}-{name}",
                    spec,
                    seed=args.seed,
                    url=victim.url,
                    key=key,
                    eval_key=eval_key,
                    redis_url=redis.url,
                    out=tmp / "runs",
                    scale=scale,
                )
                jobs.append({"attack": name, "seed": args.seed, "spec": spec, "config": config})
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
                futures = [pool.submit(run_job, job) for job in jobs]
                for future in as_completed(futures):
                    run = future.result()
                    runs[run["attack"]] = run
                    final = run["points"][-1]
                    print(
                        f"{run['attack']}: {final['queries']} queries, top-1 agreement "
                        f"{final['top1_agreement']:.3f} ({run['wall_seconds']} s)",
                        flush=True,
                    )
        finally:
            victim.stop()
            redis.stop()
    base = runs["none"]["points"][-1]["top1_agreement"]
    summary = {
        name: {
            "policy": answers[name],
            "top1_agreement": runs[name]["points"][-1]["top1_agreement"],
            "accuracy": runs[name]["points"][-1]["accuracy"],
            "agreement_cut_points": round(
                100 * (base - runs[name]["points"][-1]["top1_agreement"]), 1
            ),
        }
        for name in answers
    }
    return {
        "attack": args.attack,
        "output": spec["output"],
        "source": spec.get("source"),
        "budget": args.budget,
        "seed": args.seed,
        "student": STUDENT,
        "eval": {"source": EVAL_SOURCE, "clips": 1000},
        "am_tau": tau,
        "command": " ".join(sys.argv),
        "summary": summary,
        "runs": runs,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--attack", default="probs-stacked-affine", choices=sorted(ATTACKS))
    parser.add_argument("--budget", type=int, default=2500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--mad-epsilon", type=float, default=1.0)
    parser.add_argument("--am-fraction", type=float, default=0.05)
    parser.add_argument("--am-nu", type=float, default=1000.0)
    parser.add_argument("--am-tau", type=float, default=None)
    parser.add_argument("--calibration", type=Path, default=RESULTS / "defense_cost.json")
    arguments = parser.parse_args()
    started = time.perf_counter()
    data = main(arguments)
    data["seconds"] = round(time.perf_counter() - started, 1)
    print(write_result("defense_extraction", data))
