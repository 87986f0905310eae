"""What each answer-perturbing defense costs benign users (bench/results/defense_cost.json).

Benign traffic: ``--clips`` SynthActions clips of seed 31337 (no detector or calibration has
seen it), sent as requests of ``--batch`` clips through the real app (in process, real
lifespan, real Redis, ``POST /v1/classify`` with .npy bodies), once per API key: one key per
defense, set through the admin API, and one undefended key. Per defense:

* ``top1_accuracy`` on the true labels, and the undefended key's beside it;
* ``top1_agreement`` with the undefended answer, and ``changed`` (fraction of clips whose
  answered vector moved by more than 1e-4 in L1);
* ``mean_l1`` (and p95) between the answered and the undefended probability vectors;
* ``cpu_us_per_clip``: CPU time of the defense itself (``perturb_answers`` on the forward
  pass's logits and features, in request-sized batches, ``--repeats`` passes, this process's
  ``time.process_time``), i.e. the extra CPU per clip a defended key costs the server;
* ``request_cpu_ms_per_clip``: CPU of the whole request path per clip (forward pass included)
  for this key, beside the undefended key's: on a loaded machine, a noisy upper view.

For contrast, ``attack_streams``: the same per-clip quantities (change of the answer, top-1
flips, AM's fraction mostly misinformed) for ``--attack-clips`` clips of the attacker's query
sources (noise, stacked affine, layered stacked affine), computed on the forward pass's outputs
with the same defense functions (not served: no key is charged).

Adaptive misinformation's ``tau`` is calibrated first on ``--calibration-clips`` benign clips
of seed 9001 (the detectors' calibration seed), so that each of ``--am-fractions`` (5%, 2%) of
them get mostly misinformation; the result records tau and the fraction affected on the eval
clips.

Run: OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/defense_cost.py [--clips 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import percentile, write_result

from attacker.sources import ClipShape, build_source
from shared.codec import NPY_CONTENT_TYPE, encode_npy
from shared.schemas import DefensePolicy
from shared.synthactions import SynthActions
from victim_server.app import create_app
from victim_server.detection.calibration import CALIBRATION_SEED
from victim_server.policy.answers import perturb_answers
from victim_server.policy.misinformation import misinformation_weight
from victim_server.policy.outputs import softmax
from victim_server.services import Services
from victim_server.settings import Settings
from vidsteal.processes import start_redis
from vidsteal.scoreboard.benign import BENIGN_SEED, am_taus, forward
from vidsteal.scoreboard.defenses import AM_NU

EVAL_SEED = BENIGN_SEED
ATTACK_SOURCES: dict[str, dict[str, Any]] = {
    "noise": {"kind": "noise"},
    "stacked_affine": {"kind": "stacked_affine"},
    "stacked_affine_layered": {"kind": "stacked_affine", "layered": 0.8},
}
ADMIN = "d" * 32


def defenses(taus: dict[float, float]) -> dict[str, dict[str, Any]]:
    """The defended keys' policies (admin API bodies), by name; ``taus``: fraction -> tau."""
    policies: dict[str, dict[str, Any]] = {
        "mad_argmax_l1_0.5": {"prediction_poisoning": {"epsilon": 0.5, "keep_argmax": True}},
        "mad_argmax_l1_1.0": {"prediction_poisoning": {"epsilon": 1.0, "keep_argmax": True}},
        "mad_l1_0.5": {"prediction_poisoning": {"epsilon": 0.5, "keep_argmax": False}},
        "mad_l1_1.0": {"prediction_poisoning": {"epsilon": 1.0, "keep_argmax": False}},
    }
    for fraction, tau in taus.items():
        name = f"am_{round(100 * fraction)}pct"
        policies[name] = {"adaptive_misinformation": {"tau": tau, "nu": AM_NU}}
    return policies


async def answers(
    client: httpx.AsyncClient, api_key: str, clips: np.ndarray, batch: int
) -> tuple[np.ndarray, float]:
    """The key's answered probability vectors and the request path's CPU seconds."""
    rows: list[list[float]] = []
    cpu = time.process_time()
    for start in range(0, len(clips), batch):
        response = await client.post(
            "/v1/classify",
            content=encode_npy(clips[start : start + batch]),
            headers={"Authorization": f"Bearer {api_key}", "Content-Type": NPY_CONTENT_TYPE},
        )
        response.raise_for_status()
        rows.extend(r["probs"] for r in response.json()["results"])
    return np.array(rows), time.process_time() - cpu


def defense_cpu(
    logits: np.ndarray,
    features: np.ndarray | None,
    policy: DefensePolicy,
    batch: int,
    repeats: int,
) -> float:
    """CPU microseconds per clip of the defense itself, in request-sized batches."""
    probs = softmax(logits)
    cpu = time.process_time()
    for _ in range(repeats):
        for start in range(0, len(logits), batch):
            part = slice(start, start + batch)
            perturb_answers(
                probs[part], logits[part], None if features is None else features[part], policy
            )
    return 1e6 * (time.process_time() - cpu) / (repeats * len(logits))


async def attack_streams(
    services: Services, policies: dict[str, dict[str, Any]], clips: int
) -> dict[str, Any]:
    """Per attacker source: how the defenses change the answers to its queries."""
    spec = services.model_config.input
    shape = ClipShape(spec.frames, spec.height, spec.width)
    streams: dict[str, Any] = {}
    for name, config in ATTACK_SOURCES.items():
        queries = itertools.islice(build_source(config, shape=shape, seed=0), clips)
        batch = np.stack([q.clip for q in queries])
        logits, features = await forward(services, batch, 100)
        own = softmax(logits)
        rows: dict[str, Any] = {"mean_top_probability": round(float(own.max(1).mean()), 4)}
        for defense, body in policies.items():
            policy = DefensePolicy.model_validate(body)
            out = perturb_answers(own, logits, features, policy)
            row = {
                "mean_l1": round(float(np.abs(out - own).sum(1).mean()), 4),
                "top1_changed": round(float((out.argmax(1) != own.argmax(1)).mean()), 4),
            }
            if policy.adaptive_misinformation is not None:
                alpha = misinformation_weight(own, policy.adaptive_misinformation)
                row["mostly_misinformation"] = round(float((alpha > 0.5).mean()), 4)
            rows[defense] = row
        streams[name] = rows
        print(f"attack stream {name}: {rows}", flush=True)
    return streams


async def main(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        redis = start_redis(Path(tmp) / "redis")
        app = create_app(Settings(admin_token=ADMIN, redis_url=redis.url, threads=1))  # type: ignore[arg-type]
        try:
            async with app.router.lifespan_context(app):
                services: Services = app.state.services
                return await measure(app, services, args)
        finally:
            redis.stop()


async def measure(app: Any, services: Services, args: argparse.Namespace) -> dict[str, Any]:
    spec = services.model_config.input
    shape = {"frames": spec.frames, "height": spec.height, "width": spec.width}
    taus = await am_taus(services, args.calibration_clips, args.am_fractions)
    print(f"tau {taus} from {args.calibration_clips} clips of seed {CALIBRATION_SEED}")

    clips, labels = SynthActions(seed=EVAL_SEED, **shape).batch(0, args.clips)
    logits, features = await forward(services, clips, args.batch)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    transport = httpx.ASGITransport(app=app)
    policies = {"none": {}, **defenses(taus)}
    served: dict[str, tuple[np.ndarray, float]] = {}
    async with httpx.AsyncClient(transport=transport, base_url="http://victim") as client:
        for name, body in policies.items():
            created = await client.post(
                "/admin/keys",
                json={"budget": args.clips, "output": "probs", "name": name, "defenses": body},
                headers=admin,
            )
            created.raise_for_status()
            served[name] = await answers(client, created.json()["api_key"], clips, args.batch)
            print(f"{name}: served {args.clips} clips", flush=True)

    streams = await attack_streams(services, defenses(taus), args.attack_clips)
    base = served["none"][0]
    own = softmax(logits)
    results: dict[str, Any] = {}
    for name, (probs, request_cpu) in served.items():
        l1 = np.abs(probs - base).sum(axis=1)
        row: dict[str, Any] = {
            "policy": policies[name],
            "top1_accuracy": round(float((probs.argmax(1) == labels).mean()), 4),
            "top1_agreement": round(float((probs.argmax(1) == base.argmax(1)).mean()), 4),
            "changed": round(float((l1 > 1e-4).mean()), 4),
            "mean_l1": round(float(l1.mean()), 4),
            "p95_l1": round(percentile(l1.tolist(), 0.95), 4),
            "request_cpu_ms_per_clip": round(1e3 * request_cpu / args.clips, 3),
        }
        if name != "none":
            policy = DefensePolicy.model_validate(policies[name])
            row["cpu_us_per_clip"] = round(
                defense_cpu(logits, features, policy, args.batch, args.repeats), 1
            )
            row["accuracy_cost_points"] = round(
                100 * (results["none"]["top1_accuracy"] - row["top1_accuracy"]), 2
            )
            if policy.adaptive_misinformation is not None:
                alpha = misinformation_weight(own, policy.adaptive_misinformation)
                row["mostly_misinformation"] = round(float((alpha > 0.5).mean()), 4)
                row["mean_alpha"] = round(float(alpha.mean()), 4)
        results[name] = row
        print(f"  {name}: {row}", flush=True)
    return {
        "model": services.model_config.model_tag,
        "eval": {"data": "synthactions", "seed": EVAL_SEED, "clips": args.clips},
        "request_batch": args.batch,
        "am_calibration": {
            "data": "synthactions",
            "seed": CALIBRATION_SEED,
            "clips": args.calibration_clips,
            "fractions": args.am_fractions,
            "taus": [round(taus[f], 6) for f in args.am_fractions],
            "nu": AM_NU,
        },
        "cpu_repeats": args.repeats,
        "features": None if features is None else int(features.shape[1]),
        "defenses": results,
        "attack_streams": {"clips": args.attack_clips, "seed": 0, "sources": streams},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--calibration-clips", type=int, default=2000)
    parser.add_argument("--am-fractions", type=float, nargs="+", default=[0.05, 0.02])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--attack-clips", type=int, default=500)
    parser.add_argument("--no-write", action="store_true")
    arguments = parser.parse_args()
    started = time.perf_counter()
    data = asyncio.run(main(arguments))
    data["config"] = vars(arguments)
    data["seconds"] = round(time.perf_counter() - started, 1)
    if not arguments.no_write:
        print(write_result("defense_cost", data))
