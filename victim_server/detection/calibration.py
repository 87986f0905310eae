"""Benign calibrations the detectors need, loaded at start-up or computed by the CLI.

* the naturalness embedding's benign ranges (``prada_stats``): a JSON, benign clips (.npz), the
  model's committed file, or SynthActions clips as a last resort (statistics only: cheap);
* the OOD monitor's threshold and test (``ood``): a JSON made by ``python -m victim_server
  calibrate-detectors`` from the victim's own scores on benign clips (forward passes: never at
  start-up). The embedded victim's is committed beside its weights, calibrated on SynthActions
  seed :data:`CALIBRATION_SEED`, a seed no training, evaluation or benchmark stream uses.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from shared.detection import NaturalnessEmbedding
from shared.detection.ood import OodCalibration, ScoreKind, clip_scores
from shared.synthactions import SynthActions
from victim_server.inference.runner import ModelRunner
from victim_server.models.config import InputSpec

__all__ = ["CALIBRATION_SEED", "calibrate_ood", "load_embedding", "load_ood_calibration"]

log = logging.getLogger("vidsteal.victim.detection")

# Benign calibration clips for the detectors. Seeds in use elsewhere: 0 (victim training),
# 1 (victim held-out), 5/7/101/202 (tests), 777 (attacker grey box), 8080 and 31337 (benign
# benchmark streams), 12345 (evaluate), 424242 (attacker evaluation).
CALIBRATION_SEED = 9001


def load_embedding(
    calibration: Path | None, spec: InputSpec, default: Path | None
) -> NaturalnessEmbedding:
    """The embedding's benign ranges: a calibration JSON (or .npz of benign clips), the model's
    committed calibration, or -- last resort -- SynthActions clips at the model's clip shape."""
    for path in (calibration, default):
        if path is None or not path.is_file():
            continue
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return NaturalnessEmbedding.fit(np.asarray(data["clips"], dtype=np.uint8))
        return NaturalnessEmbedding.load(path)
    log.warning(
        "no detection calibration given: using SynthActions clips; pass "
        "--detection-calibration with benign clips of your own data"
    )
    frames, size = min(spec.frames, 16), min(spec.height, spec.width, 64)
    clips, _ = SynthActions(seed=0, frames=frames, height=size, width=size).batch(0, 2000)
    return NaturalnessEmbedding.fit(clips)


def load_ood_calibration(calibration: Path | None, default: Path | None) -> OodCalibration | None:
    """The OOD monitor's calibration, or None (then keys cannot select ``ood``)."""
    if calibration is not None:
        return OodCalibration.load(calibration)  # asked for: a missing file is an error
    if default is not None and default.is_file():
        return OodCalibration.load(default)
    return None


def calibrate_ood(
    runner: ModelRunner,
    *,
    seed: int = CALIBRATION_SEED,
    clips: int = 4000,
    batch: int = 100,
    score: ScoreKind = "energy",
) -> OodCalibration:
    """Fit the OOD monitor on the victim's scores for ``clips`` benign SynthActions clips."""
    spec = runner.config.input
    data = SynthActions(seed=seed, frames=spec.frames, height=spec.height, width=spec.width)
    scores = []
    for start in range(0, clips, batch):
        batch_clips, _ = data.batch(start, min(batch, clips - start))
        scores.append(clip_scores(runner([batch_clips])[0].logits, score))
    return OodCalibration.fit(
        np.concatenate(scores),
        score=score,
        source={"data": "synthactions", "seed": seed, "model": runner.config.model_tag},
    )
