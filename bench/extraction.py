"""Fidelity vs queries, per attack, as the mean and spread of several seeds (writes
bench/results/extraction.json and extraction.png, replaced whole on every run).

Every attack runs the real attacker (``attacker.run.run_attack``: HTTP, Redis answer cache,
transfer set, training, evaluation) against one real uvicorn victim and redis-server on
127.0.0.1, with a fresh API key per (attack, seed), so no answer is shared between jobs. Each
seed changes both the query stream and the student's initialisation. Fidelity is measured after
each budget point of one continual run (1,250 / 2,500 / 5,000 / 10,000 / 20,000 queries) on the
same 1,000 held-out SynthActions clips (seed 424242), labelled by the victim through a separate
key. ``knockoffnets-art`` runs ART's KnockoffNets (random sampling, probabilities) side by side:
same victim over HTTP, same pool of stacked-affine clips, same budget, same student
architecture and the same held-out clips (``bench/knockoff_peer.py``).

Jobs run in parallel processes (``--jobs``, one torch thread each).

    .venv/bin/python bench/extraction.py                       # every attack, seeds 0 1 2
    .venv/bin/python bench/extraction.py --attacks probs-stacked-affine --seeds 0 --scale 0.1
    .venv/bin/python bench/extraction.py --victim-model torchscript --victim-weights B.pt \
        --victim-input 16x32x32 --results extraction_second_victim --attacks probs-stacked-affine
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import multiprocessing
import os
import secrets
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, git_commit, write_result

from vidsteal.processes import start_redis, start_victim
from vidsteal.scoreboard.attacks import (
    DATAFREE_EXAMPLE,
    EVAL_SOURCE,
    LAYERED,
    NATURAL,
    SOFT_LOSS,
    STUDENT,
    TRAIN,
    attack_config,
)
from vidsteal.scoreboard.runs import create_key as _key

ATTACKS: dict[str, dict[str, Any]] = {
    "probs-stacked-affine": {
        "output": "probs",
        "budget": 20000,
        "source": LAYERED,
        "train": SOFT_LOSS,
    },
    "topk5-stacked-affine": {
        "output": "topk",
        "top_k": 5,
        "budget": 20000,
        "source": LAYERED,
        "train": SOFT_LOSS,
    },
    "label-stacked-affine": {"output": "label", "budget": 20000, "source": LAYERED},
    "grey-box-5pct-labelled": {
        "output": "probs",
        "budget": 10000,
        "source": {
            "kind": "mix",
            "parts": [{"source": NATURAL, "weight": 0.05}, {"source": LAYERED, "weight": 0.95}],
        },
        "train": {**SOFT_LOSS, "true_label_weight": 1.0},
    },
    "knockoffnets-art": {"output": "probs", "budget": 5000, "source": LAYERED, "peer": "art"},
    "probs-noise": {
        "output": "probs",
        "budget": 5000,
        "source": {"kind": "noise"},
        "train": SOFT_LOSS,
    },
}
# Active selection (attacker.active): rounds of ACTIVE_ROUND paid clips, so the round ends fall on
# the budget points above; each round after the first pays for 1 in `pool_factor` candidates.
ACTIVE_STRATEGIES = ("random", "entropy", "margin", "coreset", "balanced")
for _strategy in ACTIVE_STRATEGIES:
    ATTACKS[f"active-{_strategy}"] = {
        "output": "probs",
        "budget": 10000,
        "source": LAYERED,
        "train": SOFT_LOSS,
        "select": {"strategy": _strategy, "pool_factor": 8},
    }
# Balanced selection on the thinner answers: the student scores the candidates, so it needs
# nothing from the victim but the paid answers, whatever their form.
ATTACKS["active-balanced-topk5"] = {**ATTACKS["active-balanced"], "output": "topk", "top_k": 5}
ATTACKS["active-balanced-label"] = {
    **{k: v for k, v in ATTACKS["active-balanced"].items() if k != "train"},
    "output": "label",
}
# The grey box with balanced selection: the mix keeps its weights (5% labelled natural clips in
# every round), the strategy picks within each part.
ATTACKS["active-balanced-grey-box"] = {
    **ATTACKS["grey-box-5pct-labelled"],
    "select": {"strategy": "balanced", "pool_factor": 8},
}
# Balanced selection from a student first pre-trained on 20,000 unpaid clips of the source to
# read the motion factors their recipes name (train.pretext, attacker/train/pretext.py). The
# pre-trained weights depend on the seed, source and student only, not on the answers, so the
# attacks share one cache: the label-only run of a seed reuses the probabilities run's.
PRETEXT_CACHE = Path(__file__).resolve().parent / ".cache" / "pretext"
PRETEXT = {"steps": 4000, "clips": 20000, "cache_dir": str(PRETEXT_CACHE)}
ATTACKS["active-balanced-pretext"] = {
    **ATTACKS["active-balanced"],
    "train": {**SOFT_LOSS, "pretext": PRETEXT},
}
ATTACKS["active-balanced-label-pretext"] = {
    **ATTACKS["active-balanced-label"],
    "train": {"pretext": PRETEXT},
}
ATTACKS["active-balanced-topk5-pretext"] = {
    **ATTACKS["active-balanced-topk5"],
    "train": {**SOFT_LOSS, "pretext": PRETEXT},
}
# KnockoffNets-style bandit over source kinds (its arms: the parts of a mix, equal weights).
ATTACKS["active-bandit"] = {
    "output": "probs",
    "budget": 10000,
    "source": {
        "kind": "mix",
        "parts": [
            {"source": {"kind": "noise"}, "weight": 1},
            {"source": {"kind": "stacked_affine"}, "weight": 1},
            {"source": LAYERED, "weight": 1},
        ],
    },
    "train": SOFT_LOSS,
    "select": {"strategy": "bandit"},
}
# The data-free generator of examples/datafree_generator.yaml: no clip from any source; every
# query is a generated clip or a probe around one. After the loop a fresh student is trained on
# the transfer set with the example's 4 passes (its loop student already learnt online).
ATTACKS["datafree-generator"] = {
    "output": "probs",
    "budget": 10000,
    "datafree": yaml.safe_load(DATAFREE_EXAMPLE.read_text())["query"]["datafree"],
    "train": {**SOFT_LOSS, "epochs": 4},
}
DEFAULT_ATTACKS = [
    "probs-stacked-affine",
    "topk5-stacked-affine",
    "label-stacked-affine",
    "grey-box-5pct-labelled",
    "knockoffnets-art",
]
GOALS = {
    "probs-stacked-affine@5000": ">= 0.80 top-1 agreement (3-seed mean)",
    "probs-stacked-affine@20000": ">= 0.92",
    "topk5-stacked-affine@20000": ">= 0.88",
    "label-stacked-affine@20000": ">= 0.80",
    "grey-box-5pct-labelled@10000": ">= 0.95",
    "probs-stacked-affine@5000 vs knockoffnets-art@5000": ">= +0.10",
}
METRICS = ("top1_agreement", "top5_agreement", "accuracy")
# The library each peer needs (a bench-only extra), checked before any job starts.
PEER_MODULES = {"art": ("art", "adversarial-robustness-toolbox (pip install -e '.[bench]')")}


def missing_peers(attacks: list[str]) -> list[str]:
    """One line per requested attack whose peer library does not import."""
    problems = []
    for name in attacks:
        peer = ATTACKS[name].get("peer")
        if peer is None:
            continue
        module, package = PEER_MODULES[peer]
        try:
            importlib.import_module(module)
        except ImportError:
            problems.append(f"{name} needs {package}")
    return problems


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """One (attack, seed) in its own process with one torch thread."""
    import torch

    torch.set_num_threads(1)
    from attacker.config import validate_config

    config = validate_config(job["config"], source=job["config"]["name"])
    started = time.perf_counter()
    if job["spec"].get("peer") == "art":
        from knockoff_peer import run_knockoffnets

        points = run_knockoffnets(config, epochs=config.train.epochs)
        report: dict[str, Any] = {"points": points, "collect": {}}
    else:
        from attacker.run import RunHooks, run_attack

        def progress(queries: int, top1: float) -> None:
            print(f"  {job['attack']} seed {job['seed']} @{queries}: top-1 {top1:.3f}", flush=True)

        hooks = RunHooks(on_fidelity=progress)
        report = asyncio.run(run_attack(config, hooks=hooks, show_progress=False))
    return {
        "attack": job["attack"],
        "seed": job["seed"],
        "points": [
            {
                k: p.get(k)
                for k in (
                    "queries",
                    *METRICS,
                    "class_agreement",
                    "victim_accuracy",
                    "train_seconds",
                )
            }
            | ({"pretext": p["pretext"]} if p.get("pretext") else {})
            for p in report["points"]
        ],
        "paid": report["collect"].get("paid"),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per budget point: the mean and sample std of each metric over the seeds."""
    by_queries: dict[int, list[dict[str, Any]]] = {}
    for run in runs:
        for point in run["points"]:
            by_queries.setdefault(point["queries"], []).append(point)
    summary = []
    for queries in sorted(by_queries):
        entry: dict[str, Any] = {"queries": queries, "seeds": len(by_queries[queries])}
        for metric in METRICS:
            values = [p[metric] for p in by_queries[queries] if p.get(metric) is not None]
            if values:
                entry[f"{metric}_mean"] = round(statistics.fmean(values), 4)
                entry[f"{metric}_std"] = round(
                    statistics.stdev(values) if len(values) > 1 else 0.0, 4
                )
        per_class = [p["class_agreement"] for p in by_queries[queries] if p.get("class_agreement")]
        if per_class:
            entry["class_agreement_mean"] = [
                round(statistics.fmean(column), 4) if None not in column else None
                for column in zip(*per_class, strict=True)
            ]
        summary.append(entry)
    return summary


def train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The ``train`` fields every attack of this run takes from the command line."""
    overrides: dict[str, Any] = json.loads(args.train) if args.train else {}
    if args.epochs:
        overrides["epochs"] = args.epochs
    return overrides


def attack_spec(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """The attack as this run makes it: ``--select`` merged into a selecting attack's ``select``."""
    spec = ATTACKS[name]
    if args.select and "select" in spec:
        return {**spec, "select": {**spec["select"], **json.loads(args.select)}}
    return spec


def main(args: argparse.Namespace) -> dict[str, Any]:
    admin = secrets.token_hex(16)
    env: dict[str, str] = {}
    if args.victim_model:
        env["VIDSTEAL_MODEL"] = args.victim_model
    if args.victim_weights:
        env["VIDSTEAL_WEIGHTS"] = str(Path(args.victim_weights).resolve())
    if args.victim_input:
        env["VIDSTEAL_INPUT_SPEC"] = args.victim_input
    if args.victim_labels:
        env["VIDSTEAL_LABELS"] = str(Path(args.victim_labels).resolve())
    runs: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        redis = start_redis(tmp / "redis")
        victim = start_victim(
            redis.url, tmp / "victim.log", admin_token=admin, extra_env=env, timeout_s=300
        )
        model_key = _key(victim.url, admin, budget=1, output="label")
        model = httpx.get(
            f"{victim.url}/v1/model", headers={"Authorization": f"Bearer {model_key}"}, timeout=10
        ).json()
        try:
            jobs = []
            for seed in args.seeds:
                for name in args.attacks:
                    spec = attack_spec(name, args)
                    budget = round(spec["budget"] * args.scale)
                    key = _key(
                        victim.url,
                        admin,
                        budget=budget + 10,
                        output=spec["output"],
                        top_k=spec.get("top_k", 5),
                    )
                    eval_key = _key(victim.url, admin, budget=1100, output="label")
                    config = attack_config(
                        name,
                        spec,
                        seed=seed,
                        url=victim.url,
                        key=key,
                        eval_key=eval_key,
                        redis_url=redis.url,
                        out=tmp / "runs",
                        scale=args.scale,
                        overrides=train_overrides(args) or None,
                    )
                    jobs.append({"attack": name, "seed": seed, "spec": spec, "config": config})
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
                futures = [pool.submit(run_job, job) for job in jobs]
                for future in as_completed(futures):
                    try:
                        run = future.result()
                    except Exception as exc:  # keep the other jobs' results
                        job = jobs[futures.index(future)]
                        failed.append(
                            {"attack": job["attack"], "seed": job["seed"], "error": repr(exc)}
                        )
                        print(f"{job['attack']} seed {job['seed']} FAILED: {exc!r}", flush=True)
                        continue
                    runs.append(run)
                    final = run["points"][-1]
                    print(
                        f"{run['attack']} seed {run['seed']}: {final['queries']} queries, "
                        f"top-1 {final['top1_agreement']:.3f} ({run['wall_seconds']} s)",
                        flush=True,
                    )
        finally:
            victim.stop()
            redis.stop()
    attacks: dict[str, Any] = {}
    for name in args.attacks:
        mine = sorted((r for r in runs if r["attack"] == name), key=lambda r: r["seed"])
        if not mine:
            continue
        spec = attack_spec(name, args)
        attacks[name] = {
            "output": spec["output"],
            "top_k": spec.get("top_k") if spec["output"] == "topk" else None,
            "source": spec.get("source"),
            "datafree": spec.get("datafree"),
            "budget": round(spec["budget"] * args.scale),
            "train": {**TRAIN, **spec.get("train", {}), **train_overrides(args)},
            "peer": spec.get("peer"),
            "select": spec.get("select"),
            "points": summarise(mine),
            "runs": mine,
        }
    return {
        "victim": {k: model.get(k) for k in ("model", "num_classes", "input")},
        "seeds": args.seeds,
        "scale": args.scale,
        "student": STUDENT,
        "eval": {"source": EVAL_SOURCE, "clips": 1000},
        "command": " ".join(sys.argv),
        "goals": GOALS,
        "attacks": attacks,
        "failed": failed,
    }


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    for name, entry in results["attacks"].items():
        points = entry["points"]
        ax.errorbar(
            [p["queries"] for p in points],
            [p["top1_agreement_mean"] for p in points],
            yerr=[p["top1_agreement_std"] for p in points],
            fmt="o-" if entry.get("peer") is None else "s--",
            capsize=3,
            label=f"{name} ({entry['output']})",
        )
    ax.set_xscale("log")
    ax.set_xlabel("queries spent")
    ax.set_ylabel("top-1 agreement with the victim")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3, which="both")
    seeds = len(results["seeds"])
    ax.set_title(
        f"Extraction of {results['victim'].get('model', 'the victim')}: mean ± std of {seeds} "
        f"seeds, 1,000 held-out clips (commit {git_commit()})",
        fontsize=8,
    )
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def table(results: dict[str, Any]) -> str:
    lines = [
        "| attack | answers | queries | top-1 agreement | top-5 agreement |",
        "|---|---|---:|---:|---:|",
    ]
    for name, entry in results["attacks"].items():
        for p in entry["points"]:
            lines.append(
                f"| {name} | {entry['output']} | {p['queries']} | "
                f"{p['top1_agreement_mean']:.3f} ± {p['top1_agreement_std']:.3f} | "
                f"{p['top5_agreement_mean']:.3f} ± {p['top5_agreement_std']:.3f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--attacks", nargs="+", default=DEFAULT_ATTACKS, choices=sorted(ATTACKS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2, help="parallel attack processes")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every budget")
    parser.add_argument("--results", default="extraction", help="results file name")
    parser.add_argument("--epochs", type=float, help="override train.epochs (smoke tests)")
    parser.add_argument(
        "--train", help="JSON merged into every attack's train section, e.g. '{\"mixup\": 0.4}'"
    )
    parser.add_argument(
        "--select",
        help="JSON merged into every selecting attack's select section (rounds: a count), e.g. "
        "'{\"pool_factor\": 32}'",
    )
    parser.add_argument("--victim-model", help="serve this model instead of the embedded one")
    parser.add_argument("--victim-weights", help="its local weights file")
    parser.add_argument("--victim-input", help="its input spec, e.g. 16x32x32")
    parser.add_argument("--victim-labels", help="its labels file")
    arguments = parser.parse_args()
    if problems := missing_peers(arguments.attacks):
        sys.exit("error: " + "; ".join(problems))
    out = main(arguments)
    path = write_result(arguments.results, out)
    plot(out, RESULTS / f"{arguments.results}.png")
    print(table(out))
    print(f"wrote {path}")
    if out["failed"]:
        sys.exit(f"error: {len(out['failed'])} job(s) failed (listed under 'failed' in {path})")
