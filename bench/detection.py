"""Every detector against every query stream, in one run (bench/results/detection.json + PNG).

Streams: the attacker's sources (noise, stacked affine, layered stacked affine, a video folder of
layered affine scenes made here as mp4, the grey-box mix of 5% labelled SynthActions + 95%
layered affine, and stealth: stacked affine mixed with labelled SynthActions to keep the
naturalness statistics' W high) for ``--budget`` queries each; benign
traffic: ``--benign`` SynthActions clips of seed 31337 in sessions of same-class clips (a
realistic order), and ``--benign-videos`` clips decoded from a folder of mp4 SynthActions videos
of seed 8080. No detector has seen these seeds (the OOD calibration is seed 9001; the SEAT
encoder is trained on seed 6150 and calibrated on 6151).

The victim app runs in process with its real Redis-backed detectors. The model answers each batch
of 10 once (``services.batcher``, the request path's forward pass: logits and features); then every
detector (``prada`` on the victim's features, ``prada_stats`` on the naturalness statistics,
``ood``, ``seat`` on near pairs and known attack patterns in the SEAT encoder's space) observes
that batch under its own key through ``services.detection.observe``, as ``/v1/classify`` does
after charging. So all detectors are judged on identical streams at one model cost. Per stream
and detector: the first alarm (PRADA also at delta 0.90 / 0.95 from its W trajectory), the last
statistic, and false alarms for the benign streams. Agreement at the first alarm is the
scoreboard's (issue 12.3), not measured here.

Run: nice -n 10 .venv/bin/python bench/detection.py [--budget 1000] [--benign 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write_result

from attacker.sources import ClipShape, QueryClip, build_source
from attacker.stealth import StealthShaper
from shared.detection import NaturalnessEmbedding
from shared.schemas import DetectorName
from victim_server.app import create_app
from victim_server.services import Services
from victim_server.settings import Settings
from vidsteal.processes import start_redis
from vidsteal.scoreboard.panel import DEFAULT_DELTA, DetectorPanel
from vidsteal.scoreboard.streams import realistic_benign, video_folder

DETECTORS: tuple[DetectorName, ...] = ("prada", "prada_stats", "ood", "seat")
DEFAULT_DETECTOR = "ood"  # the server default (default_detector: auto) on a calibrated model
DELTAS = (0.85, 0.90, 0.95)
SHAPE = ClipShape(16, 32, 32)
BATCH = 10  # clips per request, as detectors see them
CHUNK = 100  # clips per forward pass


async def trajectory(
    services: Services,
    name: str,
    stream: Iterator[QueryClip],
    budget: int,
    shaper: StealthShaper | None = None,
) -> dict[str, Any]:
    """Answer ``budget`` queries of ``stream`` once; every detector observes each batch."""
    panel = DetectorPanel(services, name, DETECTORS, delta=DEFAULT_DELTA)
    sent = 0
    started = time.perf_counter()
    # The model answers CHUNK clips per forward pass (a stealth stream: one request at a time,
    # it steers on each answer); detectors observe them as requests of BATCH clips.
    chunk = BATCH if shaper is not None else CHUNK
    while sent < budget:
        queries = list(itertools.islice(stream, min(chunk, budget - sent)))
        if not queries:
            break
        all_clips = np.stack([q.clip for q in queries])
        output = await services.batcher.submit(all_clips)
        if shaper is not None:
            shaper.observe(queries, [{"index": int(i)} for i in output.logits.argmax(axis=1)])
        sent += len(queries)
        for start in range(0, len(queries), BATCH):
            part = slice(start, start + BATCH)
            features = None if output.features is None else output.features[part]
            await panel.observe(all_clips[part], output.logits[part], features)
    result: dict[str, Any] = {"queries": sent, "seconds": round(time.perf_counter() - started, 1)}
    for detector in DETECTORS:
        row = panel.summary(detector)
        if detector.startswith("prada"):
            curve = panel.curves[detector]
            row["min_w"] = min((w for _, w in curve), default=None)
            row["first_w_below"] = {
                str(d): next((q for q, w in curve if w < d), None) for d in DELTAS
            }
        result[detector] = row
    return result


async def main(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    results: dict[str, Any] = {
        "budget": args.budget,
        "benign_queries": args.benign,
        "benign_video_queries": args.benign_videos,
        "batch": BATCH,
        "detectors": list(DETECTORS),
        "default_detector": DEFAULT_DETECTOR,
        "deltas": list(DELTAS),
        "default_delta": DEFAULT_DELTA,
        "attacks": {},
        "benign": {},
    }
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        redis = start_redis(tmp / "redis")
        app = create_app(Settings(admin_token="b" * 32, redis_url=redis.url, threads=1))  # type: ignore[arg-type]
        try:
            async with app.router.lifespan_context(app):
                services: Services = app.state.services
                results["ood_calibration"] = services.detection.detectors["ood"].calibration.source  # type: ignore[attr-defined]
                videos = video_folder(tmp / "aux_videos", seed=5, videos=120, layered=True)
                natural = {"kind": "synthactions", "seed": 777, "labelled": True}
                attacks: dict[str, Any] = {
                    "noise": {"kind": "noise"},
                    "stacked_affine": {"kind": "stacked_affine"},
                    "stacked_affine_layered": {"kind": "stacked_affine", "layered": 0.8},
                    "video_folder": {
                        "kind": "video_folder",
                        "root": str(videos),
                        "clips_per_video": 8,
                    },
                    "mix_5pct_labelled": {
                        "kind": "mix",
                        "parts": [
                            {"source": natural, "weight": 0.05},
                            {"source": {"kind": "stacked_affine", "layered": 0.8}, "weight": 0.95},
                        ],
                    },
                }
                for name, config in [*attacks.items(), ("stealth", None)]:
                    print(f"attack {name} ...", flush=True)
                    shaper = None
                    if config is None:
                        natural_stream = iter(build_source(natural, shape=SHAPE, seed=0))
                        calib = np.stack([q.clip for q in itertools.islice(natural_stream, 400)])
                        shaper = StealthShaper(
                            iter(build_source(attacks["stacked_affine"], shape=SHAPE, seed=0)),
                            natural_stream,  # continues after the calibration clips
                            NaturalnessEmbedding.fit(calib),
                            target_w=0.95,
                        )
                        stream: Iterator[QueryClip] = iter(shaper)
                    else:
                        stream = iter(build_source(config, shape=SHAPE, seed=0))
                    run = await trajectory(services, name, stream, args.budget, shaper)
                    if shaper is not None:
                        run["stealth"] = {
                            k: v for k, v in shaper.stats.to_dict().items() if k != "w_history"
                        }
                    results["attacks"][name] = run
                    print("  " + _line(run), flush=True)
                benign_videos = video_folder(
                    tmp / "benign_videos",
                    seed=8080,
                    videos=(args.benign_videos + 1) // 2,
                    layered=False,
                )
                benign_streams: list[tuple[str, Iterator[QueryClip], int]] = [
                    ("synthactions_sessions", realistic_benign(31337), args.benign),
                    (
                        "video_folder",
                        iter(
                            build_source(
                                {
                                    "kind": "video_folder",
                                    "root": str(benign_videos),
                                    "clips_per_video": 2,
                                },
                                shape=SHAPE,
                                seed=0,
                            )
                        ),
                        args.benign_videos,
                    ),
                ]
                for name, stream, count in benign_streams:
                    print(f"benign {name} ...", flush=True)
                    run = await trajectory(services, f"benign-{name}", stream, count)
                    for detector in DETECTORS:
                        run[detector]["false_alarm"] = run[detector]["first_alarm"] is not None
                    results["benign"][name] = run
                    print("  " + _line(run), flush=True)
        finally:
            redis.stop()
    return results


def _line(run: dict[str, Any]) -> str:
    return f"{run['queries']} queries, {run['seconds']} s; " + "; ".join(
        f"{d}: alarm {run[d]['first_alarm']} (last {run[d]['final_score']})" for d in DETECTORS
    )


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(DETECTORS), figsize=(15, 4.5), dpi=110)
    for ax, detector in zip(axes, DETECTORS, strict=True):
        for group, style in (("attacks", "-"), ("benign", ":")):
            for name, run in results[group].items():
                curve = run[detector]["curve"]
                if curve:
                    ax.plot(
                        [q for q, _ in curve],
                        [v for _, v in curve],
                        style,
                        label=f"{'benign: ' if group == 'benign' else ''}{name}",
                    )
        if detector.startswith("prada"):
            for d in DELTAS:
                ax.axhline(d, color="grey", lw=0.7, ls="--")
            ax.set_ylim(0.0, 1.01)
            ax.set_ylabel("Shapiro-Wilk W")
        else:
            ax.set_yscale("symlog")
            ax.set_ylabel("CUSUM S (alarm at the calibrated limit)")
        ax.set_xscale("log")
        ax.set_xlabel("queries")
        ax.set_title(detector, fontsize=9)
    axes[0].legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--benign", type=int, default=10000)
    parser.add_argument("--benign-videos", type=int, default=1000)
    arguments = parser.parse_args()
    out = asyncio.run(main(arguments))
    png = RESULTS / "detection.png"
    plot(out, png)
    out["plot"] = str(png.relative_to(RESULTS.parent.parent))
    path = write_result("detection", out)
    print("\n| stream | " + " | ".join(f"{d} first alarm" for d in DETECTORS) + " |")
    for group in ("attacks", "benign"):
        for name, run in out[group].items():
            cells = " | ".join(str(run[d]["first_alarm"]) for d in DETECTORS)
            print(f"| {group[:-1] if group == 'attacks' else 'benign'} {name} | {cells} |")
    print(f"wrote {path}")
