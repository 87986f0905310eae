"""What benign users see: detectors' false alarms and defenses' top-1 accuracy cost.

Benign traffic is from seeds no detector or calibration has seen: SynthActions sessions of
same-class clips (seed 31337) and mp4 videos (seed 8080) decoded by the victim's own decoder.
Each request's answer is computed once; every detector observes it under its own key, and every
defense's answer to it is composed by the request path's own function (``compose_answers``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from shared.schemas import DefensePolicy, OutputMode
from shared.synthactions import SynthActions
from shared.video import decode_video
from victim_server.detection.calibration import CALIBRATION_SEED
from victim_server.policy.answers import compose_answers
from victim_server.policy.misinformation import calibrate_tau
from victim_server.policy.outputs import softmax
from victim_server.services import Services
from vidsteal.scoreboard.panel import DetectorPanel, replay_requests
from vidsteal.scoreboard.streams import realistic_benign

__all__ = [
    "BENIGN_SEED",
    "REQUEST_CLIPS",
    "am_taus",
    "benign_sessions",
    "benign_videos",
    "forward",
]

BENIGN_SEED = 31337
REQUEST_CLIPS = 10  # clips per benign request, as detectors see them


async def forward(services: Services, clips: np.ndarray, batch: int) -> tuple[Any, Any]:
    """The victim's logits and penultimate features, as the request path computes them."""
    logits, features = [], []
    for start in range(0, len(clips), batch):
        output = await services.batcher.submit(clips[start : start + batch])
        logits.append(output.logits)
        if output.features is not None:
            features.append(output.features)
    return np.concatenate(logits), (np.concatenate(features) if features else None)


async def am_taus(services: Services, clips: int, fractions: list[float]) -> dict[float, float]:
    """Adaptive misinformation's tau per fraction of benign calibration clips (seed 9001, the
    detectors' calibration seed) to answer mostly with misinformation."""
    spec = services.model_config.input
    data = SynthActions(
        seed=CALIBRATION_SEED, frames=spec.frames, height=spec.height, width=spec.width
    )
    calibration, _ = data.batch(0, clips)
    logits, _ = await forward(services, calibration, 100)
    return {f: calibrate_tau(softmax(logits), f) for f in fractions}


async def benign_sessions(
    services: Services,
    detectors: tuple[str, ...],
    defenses: dict[str, DefensePolicy],
    clips: int,
) -> dict[str, Any]:
    """``clips`` benign session clips in requests of REQUEST_CLIPS: each detector's first alarm
    (a false alarm) and each defense's top-1 accuracy on the true labels."""
    panel = DetectorPanel(services, "benign-sessions", detectors)
    labels_names = services.model_config.labels
    rngs = {name: np.random.default_rng(i) for i, name in enumerate(defenses)}
    correct = dict.fromkeys(defenses, 0)
    stream = realistic_benign(BENIGN_SEED)
    while panel.queries < clips:
        queries = list(itertools.islice(stream, min(REQUEST_CLIPS, clips - panel.queries)))
        batch = np.stack([q.clip for q in queries])
        truth = np.array([q.true_label for q in queries])
        output = await services.batcher.submit(batch)
        await panel.observe(batch, output.logits, output.features)
        for name, policy in defenses.items():
            answers = compose_answers(
                output.logits,
                mode=OutputMode.PROBS,
                labels=labels_names,
                top_k=5,
                defenses=policy,
                poison=False,
                rng=rngs[name],
                features=output.features,
            )
            top1 = np.array([a.index for a in answers])
            correct[name] += int((top1 == truth).sum())
    accuracy = {name: correct[name] / max(panel.queries, 1) for name in defenses}
    base = accuracy.get("none", max(accuracy.values(), default=0.0))
    return {
        "seed": BENIGN_SEED,
        "queries": panel.queries,
        "detectors": {name: _false_alarm(panel, name) for name in detectors},
        "defenses": {
            name: {
                "top1_accuracy": round(acc, 4),
                "accuracy_cost_points": round(100 * (base - acc), 2),
            }
            for name, acc in accuracy.items()
        },
    }


def _mp4_requests(root: Path, frames: int, clips: int) -> Iterator[np.ndarray]:
    """Each mp4 under ``root`` decoded as the victim decodes an upload, in requests."""
    videos = sorted(root.rglob("*.mp4"))[:clips]
    for start in range(0, len(videos), REQUEST_CLIPS):
        part = videos[start : start + REQUEST_CLIPS]
        yield np.stack([decode_video(path.read_bytes(), frames=frames) for path in part])


async def benign_videos(
    services: Services, detectors: tuple[str, ...], root: Path, clips: int
) -> dict[str, Any]:
    """Each detector's false alarms on ``clips`` mp4 videos decoded server-side."""
    frames = services.model_config.input.frames
    panel = DetectorPanel(services, "benign-videos", detectors)
    await replay_requests(panel, _mp4_requests(root, frames, clips))
    return {
        "queries": panel.queries,
        "detectors": {name: _false_alarm(panel, name) for name in detectors},
    }


def _false_alarm(panel: DetectorPanel, name: str) -> dict[str, Any]:
    alarm = panel.alarms[name]
    return {
        "false_alarm": alarm is not None,
        "first_alarm": alarm,
        "final_score": panel.curves[name][-1][1] if panel.curves[name] else None,
    }
