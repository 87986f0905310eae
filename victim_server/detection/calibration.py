"""Benign calibrations the detectors need, loaded at start-up or computed by the CLI.

* the naturalness embedding's benign ranges (``prada_stats``): a JSON, benign clips (.npz), the
  model's committed file, or SynthActions clips as a last resort (statistics only: cheap);
* the OOD monitor's threshold and test (``ood``): a JSON made by ``python -m victim_server
  calibrate-detectors`` from the victim's own scores on benign clips (forward passes: never at
  start-up). The embedded victim's is committed beside its weights, calibrated on SynthActions
  seed :data:`CALIBRATION_SEED`, a seed no training, evaluation or benchmark stream uses.
  Benign clients send windows cut from longer videos, after a codec. Windows shift a model's
  scores (on the embedded victim, 18-31% of 16-frame windows of 32- and 48-frame actions scored
  above a threshold fitted on whole 16-frame clips, against 1-1.5% of H.264 round trips), so by
  default half the calibration clips are such windows and half go through H.264 at a spread of
  quality levels (independently).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from shared.detection import NaturalnessEmbedding
from shared.detection.ood import OodCalibration, ScoreKind, clip_scores
from shared.synthactions import SynthActions
from shared.video import decode_video, encode_mp4
from victim_server.inference.runner import ModelRunner
from victim_server.models.config import InputSpec

__all__ = [
    "CALIBRATION_SEED",
    "CODEC_CRFS",
    "WINDOW_FACTORS",
    "benign_calibration_batches",
    "calibrate_ood",
    "load_embedding",
    "load_ood_calibration",
]

log = logging.getLogger("vidsteal.victim.detection")

# Benign calibration clips for the detectors. Seeds in use elsewhere: 0 (victim training),
# 1 (victim held-out), 5/7/101/202 (tests), 777 (attacker grey box), 8080 and 31337 (benign
# benchmark streams), 12345 (evaluate), 424242 (attacker evaluation).
CALIBRATION_SEED = 9001
# H.264 quality levels of the codec half of the OOD calibration: from near-transparent to the
# compression typical of uploaded video.
CODEC_CRFS = (18, 23, 28)
# Windows of the window half come from actions rendered over this many times the model's frames.
WINDOW_FACTORS = (2, 3)


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


def through_codec(clip: np.ndarray, crf: int) -> np.ndarray:
    """``clip`` as the victim sees it after an H.264 round trip (yuv420p, the given CRF)."""
    frames, height, width, _ = clip.shape
    decoded = decode_video(encode_mp4(clip, crf=crf), frames=frames)
    return decoded[:, :height, :width]  # odd sizes come back padded to even


def benign_calibration_batches(
    spec: InputSpec,
    *,
    seed: int,
    clips: int,
    batch: int,
    codec_fraction: float,
    window_fraction: float,
) -> Iterator[np.ndarray]:
    """Batches of benign SynthActions clips at the model's input shape. A ``window_fraction`` of
    them are windows of ``spec.frames`` consecutive frames cut at a random start from an action
    rendered over :data:`WINDOW_FACTORS` times as many frames; independently, a
    ``codec_fraction`` are replaced by their H.264 round trip at a CRF from :data:`CODEC_CRFS`.
    Every choice comes from ``seed``."""
    for name, fraction in (
        ("codec_fraction", codec_fraction),
        ("window_fraction", window_fraction),
    ):
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"{name} must be in [0, 1]")
    renders = {
        factor: SynthActions(
            seed=seed, frames=spec.frames * factor, height=spec.height, width=spec.width
        )
        for factor in (1, *WINDOW_FACTORS)
    }
    rng = np.random.default_rng(seed)
    factors = np.where(
        rng.random(clips) < window_fraction, rng.choice(np.asarray(WINDOW_FACTORS), clips), 1
    )
    starts = rng.random(clips)
    encoded = rng.random(clips) < codec_fraction
    crfs = rng.choice(np.asarray(CODEC_CRFS), size=clips)
    for first in range(0, clips, batch):
        batch_clips, _ = renders[1].batch(first, min(batch, clips - first))
        for offset in range(len(batch_clips)):
            index = first + offset
            factor = int(factors[index])
            if factor > 1:
                start = int(starts[index] * (spec.frames * (factor - 1) + 1))
                batch_clips[offset] = renders[factor].clip(index)[start : start + spec.frames]
            if encoded[index]:
                batch_clips[offset] = through_codec(batch_clips[offset], int(crfs[index]))
        yield batch_clips


def calibrate_ood(
    runner: ModelRunner,
    *,
    seed: int = CALIBRATION_SEED,
    clips: int = 4000,
    batch: int = 100,
    score: ScoreKind = "energy",
    codec_fraction: float = 0.5,
    window_fraction: float = 0.5,
) -> OodCalibration:
    """Fit the OOD monitor on the victim's scores for ``clips`` benign SynthActions clips, some
    cut as windows of longer actions, some through H.264 (:func:`benign_calibration_batches`)."""
    batches = benign_calibration_batches(
        runner.config.input,
        seed=seed,
        clips=clips,
        batch=batch,
        codec_fraction=codec_fraction,
        window_fraction=window_fraction,
    )
    scores = [clip_scores(runner([b])[0].logits, score) for b in batches]
    return OodCalibration.fit(
        np.concatenate(scores),
        score=score,
        source={
            "data": "synthactions",
            "seed": seed,
            "model": runner.config.model_tag,
            "codec_fraction": codec_fraction,
            "codec_crfs": list(CODEC_CRFS) if codec_fraction > 0 else [],
            "window_fraction": window_fraction,
            "window_factors": list(WINDOW_FACTORS) if window_fraction > 0 else [],
        },
    )
