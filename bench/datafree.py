"""Data-free extraction: top-1 agreement vs queries of the DFME-style video generator attack
(writes bench/results/datafree.json and datafree.png, or ``--results NAME``, replaced whole on
every run).

The attacker's own stage (``attacker.stages.datafree.collect_datafree``) runs against the real
victim app in process (``httpx.ASGITransport``: real lifespan, real accounting and Lua budget
scripts in a real redis-server, no sockets) with a fresh API key answering probabilities. No clip
from any source reaches the loop: every clip it sends is generated (or a probe around one). The
loop's student is evaluated every ``--eval-every`` queries on the same 1,000 held-out SynthActions
clips (seed 424242) the other benches use, labelled by the victim through a separate key.
``--control`` adds the same run without generator training (no probes; the student learns from
the untrained generator's clips), which shows what the adversarial gradient adds.

CPU seconds are this process's (the attacker and the in-process victim together); run it with
one torch thread under ``nice`` on the shared 2-core machine:

    nice -n 10 .venv/bin/python bench/datafree.py --budget 200000
    nice -n 10 .venv/bin/python bench/datafree.py --budget 20000 --eval-every 5000 --no-write
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
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, git_commit, write_result

from vidsteal.processes import start_redis

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "datafree_generator.yaml"
EVAL_SOURCE = {"kind": "synthactions", "seed": 424242, "labelled": True}


async def _key(client: httpx.AsyncClient, admin: str, **plan: Any) -> str:
    response = await client.post(
        "/admin/keys", json=plan, headers={"Authorization": f"Bearer {admin}"}
    )
    response.raise_for_status()
    key: str = response.json()["api_key"]
    return key


async def run_one(
    *,
    name: str,
    redis_url: str,
    transport: httpx.ASGITransport,
    admin: str,
    budget: int,
    seed: int,
    eval_every: int,
    datafree: dict[str, Any],
    out: Path,
    deadline: float,
    on_point: Any = None,
) -> dict[str, Any]:
    import yaml

    from attacker.client import VictimClient
    from attacker.client.store import open_store
    from attacker.config import validate_config
    from attacker.eval.fidelity import evaluate
    from attacker.stages.collect import label_eval_set
    from attacker.stages.datafree import collect_datafree

    async with httpx.AsyncClient(transport=transport, base_url="http://victim") as http:
        attack_key = await _key(http, admin, budget=budget, output="probs")
        eval_key = await _key(http, admin, budget=1000, output="label")
        raw = yaml.safe_load(EXAMPLE.read_text())
        raw["query"]["datafree"] = {**raw["query"]["datafree"], **datafree}
        raw.update(
            name=name,
            budget=budget,
            seed=seed,
            redis_url=redis_url,
            out=str(out),
            victim={"url": "http://victim", "api_key": attack_key, "eval_api_key": eval_key},
        )
        raw["eval"] = {"source": EVAL_SOURCE, "clips": 1000, "points": [1.0]}
        config = validate_config(raw, source=name)
        spent_before = (await http.get("/v1/budget", headers=_auth(attack_key))).json()
    store = open_store(redis_url)
    curve: list[dict[str, Any]] = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    try:
        eval_set = await label_eval_set(config, store, transport=transport)
        next_eval = [eval_every]

        def on_round(state: Any, clips: int) -> None:
            late = time.perf_counter() > deadline
            if clips < next_eval[0] and clips < budget and not late:
                return
            next_eval[0] = (clips // eval_every + 1) * eval_every
            fidelity = evaluate(state.student, eval_set.clips)
            last = state.history[-1]
            point = {
                "queries": clips,
                "top1_agreement": round(fidelity.top1_agreement, 4),
                "top5_agreement": round(fidelity.top5_agreement, 4),
                "accuracy": None if fidelity.accuracy is None else round(fidelity.accuracy, 4),
                "cpu_seconds": round(time.process_time() - cpu0, 1),
                "wall_seconds": round(time.perf_counter() - wall0, 1),
                **{
                    k: round(v, 4)
                    for k, v in last.items()
                    if k in ("disagreement", "batch_agreement", "victim_class_entropy")
                },
            }
            curve.append(point)
            print(f"  {name} @{clips}: {json.dumps(point)}", flush=True)
            if on_point is not None:
                on_point(name, curve)
            if late:
                raise _Deadline

        async with VictimClient(
            config.victim.url, config.victim.api_key, transport=transport, seed=seed
        ) as client:
            info = await client.model_info()
            stopped_by = "budget"
            try:
                stats = await collect_datafree(
                    config, client, info, store, on_round=on_round, show_progress=False
                )
                paid, cache_hits, summary = stats.paid, stats.cache_hits, stats.extra["datafree"]
            except _Deadline:
                stopped_by = "deadline"
                paid, cache_hits, summary = curve[-1]["queries"], 0, None
            spent = (await client.budget()).spent
    finally:
        await store.aclose()
    return {
        "name": name,
        "seed": seed,
        "budget": budget,
        "stopped_by": stopped_by,
        "paid": paid,
        "victim_spent": spent - spent_before["spent"],
        "cache_hits": cache_hits,
        "cpu_seconds": round(time.process_time() - cpu0, 1),
        "wall_seconds": round(time.perf_counter() - wall0, 1),
        "datafree": config.query.datafree.model_dump(mode="json") if config.query.datafree else {},
        "summary": summary,
        "curve": curve,
        "eval_victim_accuracy": float(
            (eval_set.clips.victim_top1 == eval_set.clips.true_labels).mean()
        ),
    }


class _Deadline(Exception):
    """The run's wall-clock allowance (``--deadline-minutes``) ran out."""


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from victim_server.app import create_app
    from victim_server.settings import Settings

    header = {
        "command": " ".join(["bench/datafree.py", *sys.argv[1:]]),
        "victim": "embedded (swin3d_micro.synthactions), in process over ASGI, probs key",
        "eval": {"source": EVAL_SOURCE, "clips": 1000},
        "goal": ">= 0.50 top-1 agreement within 500,000 queries, no clips from any source",
        "torch_threads": torch.get_num_threads(),
    }
    admin = secrets.token_hex(16)
    started = time.perf_counter()

    def on_point(name: str, curve: list[dict[str, Any]]) -> None:
        # Partial results after every point, so a run stopped early still leaves its curve.
        if not args.no_write:
            partial = {**header, "complete": False, "runs": [*runs, {"name": name, "curve": curve}]}
            _write(partial, args.results)

    overrides = json.loads(args.set) if args.set else {}
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=args.work) as tmp_name:
        tmp = Path(tmp_name)
        redis = start_redis(tmp / "redis")
        try:
            settings = Settings(admin_token=admin, redis_url=redis.url, threads=1)  # type: ignore[arg-type]
            app = create_app(settings)
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                variants = [("generator", overrides)]
                if args.control:
                    variants.append(
                        ("control-untrained-generator", {**overrides, "train_generator": False})
                    )
                deadline = time.perf_counter() + 60 * args.deadline_minutes
                for name, datafree in variants:
                    runs.append(
                        await run_one(
                            name=name,
                            redis_url=redis.url,
                            transport=transport,
                            admin=admin,
                            budget=args.budget,
                            seed=args.seed,
                            eval_every=args.eval_every,
                            datafree=datafree,
                            out=tmp / name,
                            deadline=deadline,
                            on_point=on_point,
                        )
                    )
        finally:
            redis.stop()
    return {
        **header,
        "complete": True,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "runs": runs,
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for run in result["runs"]:
        xs = [p["queries"] for p in run["curve"]]
        ys = [p["top1_agreement"] for p in run["curve"]]
        ax.plot(xs, ys, marker="o", markersize=3, label=run["name"])
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=0.8, label="goal 0.50")
    ax.axhline(1 / 16, color="grey", linestyle=":", linewidth=0.8, label="chance (16 classes)")
    ax.set_xlabel("queries paid (generated clips + probes + student clips)")
    ax.set_ylabel("top-1 agreement, 1,000 held-out clips")
    ax.set_ylim(0, 1)
    ax.set_title(f"Data-free generator vs the embedded victim ({result['git_commit']})")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=10_000)
    parser.add_argument("--control", action="store_true", help="also run the untrained generator")
    parser.add_argument(
        "--set", help="JSON overrides of query.datafree, e.g. '{\"directions\": 4}'"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--deadline-minutes", type=float, default=1e9, help="stop (and report) after this long"
    )
    parser.add_argument("--work", default=None, help="directory for temporary run data")
    parser.add_argument("--no-write", action="store_true", help="print only; keep results files")
    parser.add_argument(
        "--results", default="datafree", help="results name: bench/results/NAME.json and .png"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("VIDSTEAL_THREADS", str(args.threads))
    result = asyncio.run(main_async(args))
    if args.no_write:
        print(json.dumps(result, indent=1)[-3000:])
        return
    path = _write(result, args.results)
    print(f"wrote {path} and {RESULTS / f'{args.results}.png'}")


def _write(result: dict[str, Any], name: str) -> Path:
    path = write_result(name, result)
    plot({**result, "git_commit": git_commit()}, RESULTS / f"{name}.png")
    return path


if __name__ == "__main__":
    main()
