"""The SEAT detector: the committed encoder's geometry on unseen seeds, near-duplicate streams
against benign sessions through the Redis-backed detector, its bounds, and train-detector."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as aioredis
import torch
from typer.testing import CliRunner

from shared.detection import NaturalnessEmbedding
from shared.synthactions import NUM_CLASSES, SynthActions
from victim_server.accounting.connection import connect_redis
from victim_server.cli import app
from victim_server.detection.base import DetectorUnavailable, Observation
from victim_server.detection.calibration import through_codec
from victim_server.detection.registry import build_detectors
from victim_server.detection.seat import SeatDetector, load_seat
from victim_server.detection.seat_encoder import (
    ENCODER_SPEC,
    SEAT_WEIGHTS,
    SeatEncoder,
    folded,
    load_seat_model,
)
from victim_server.detection.seat_train import (
    TRAIN_SEED,
    augmented_pair_distances,
    session_order,
)
from victim_server.inference.preprocess import preprocess

FRESH_SEED = 4711  # seen by neither training (6150) nor calibration (6151)


def _observation(clips: np.ndarray) -> Observation:
    return Observation(clips, np.zeros((len(clips), NUM_CLASSES), np.float32), None)


def _copy(clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An attacker's near-duplicate: a 1-pixel shift, a brightness change and pixel noise."""
    shifted = np.roll(clip, int(rng.integers(-1, 2)), axis=2).astype(np.int16)
    noisy = shifted + int(rng.integers(-12, 13)) + rng.integers(-4, 5, size=clip.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _sessions(seed: int, count: int) -> np.ndarray:
    """``count`` benign clips of ``seed`` in same-class sessions of 1-8 clips."""
    clips, labels = SynthActions(seed=seed).batch(0, count)
    return clips[session_order(labels, np.random.default_rng(seed))]


def test_encoder_maps_copies_closer_than_other_clips() -> None:
    model, calibration = load_seat()
    assert model.record["train"]["seed"] == TRAIN_SEED
    same, other = augmented_pair_distances(
        model, seed=FRESH_SEED, clips=96, rng=np.random.default_rng(0)
    )
    assert np.median(same) < 0.5 * np.median(other)
    assert (same < other).mean() > 0.95
    # copies the training never made: H.264 round trips plus a shift and a brightness change
    clips, _ = SynthActions(seed=FRESH_SEED).batch(500, 32)
    rng = np.random.default_rng(1)
    copies = np.stack([_copy(through_codec(c, crf=28), rng) for c in clips])
    a, b = model.embed(clips), model.embed(copies)
    to_copy = np.linalg.norm(a - b, axis=1)
    to_next = np.linalg.norm(a - np.roll(b, 1, axis=0), axis=1)
    assert (to_copy < to_next).mean() > 0.95
    assert (to_copy < calibration.threshold).mean() > 0.5  # most copies pair up
    assert (to_next < calibration.threshold).mean() < 0.05  # other clips rarely do


async def test_alarms_on_near_duplicates_not_on_benign_sessions(
    binary_redis: aioredis.Redis,
) -> None:
    detector = SeatDetector(binary_redis)
    rng = np.random.default_rng(2)
    seeds, _ = SynthActions(seed=FRESH_SEED).batch(1000, 100)
    # each fresh clip followed by three perturbed copies (augmentation-based extraction)
    attack = np.stack([c for s in seeds for c in (s, _copy(s, rng), _copy(s, rng), _copy(s, rng))])
    benign = _sessions(FRESH_SEED + 1, 400)
    for name, stream in (("attack", attack[:400]), ("benign", benign)):
        for start in range(0, len(stream), 10):
            await detector.observe(name, _observation(stream[start : start + 10]))
    attacked, quiet = await detector.status("attack"), await detector.status("benign")
    assert attacked.alarm and attacked.alarm_query is not None and attacked.alarm_query <= 100
    assert attacked.queries == quiet.queries == 400
    assert not quiet.alarm and (quiet.score or 0.0) < detector.calibration.limit / 2  # type: ignore[union-attr]
    pairs = {
        name: int(await binary_redis.hget(f"vs:{{{name}}}:det:seat", "pairs") or 0)
        for name in ("attack", "benign")
    }
    assert pairs["attack"] >= 250 and pairs["benign"] <= 20


async def test_state_is_shared_and_the_ring_is_bounded(
    binary_redis: aioredis.Redis, redis_url: str
) -> None:
    """Two detector instances (two server processes) on one Redis see one state; the ring
    never holds more than ``ring`` embeddings however long the history."""
    other = connect_redis(redis_url, decode=False)
    try:
        first, second = SeatDetector(binary_redis), SeatDetector(other)
        for detector in (first, second):
            assert detector.calibration is not None
            detector.calibration = replace(detector.calibration, ring=16)
        clip = SynthActions(seed=FRESH_SEED).batch(2000, 1)[0]
        repeated = np.repeat(clip, 10, axis=0)  # the same clip again and again
        for i in range(6):
            await (first, second)[i % 2].observe("k", _observation(repeated))
        a, b = await first.status("k"), await second.status("k")
        assert a == b and a.queries == 60 and a.alarm and a.alarm_query is not None
        # identical clips: every one after the second is flagged, each adds the CUSUM's step
        up, _ = first.calibration.increments  # type: ignore[union-attr]
        assert a.alarm_query <= 2 + math.ceil(first.calibration.limit / up)  # type: ignore[union-attr]
        blob = await binary_redis.get("vs:{k}:det:seat:ring")
        assert isinstance(blob, bytes) and len(blob) == 16 * first.model.encoder.dim * 4  # type: ignore[union-attr]
        await second.reset("k")
        assert (await first.status("k")).queries == 0
        assert await binary_redis.exists("vs:{k}:det:seat:ring") == 0
    finally:
        await other.aclose()


async def test_missing_weights_make_seat_unavailable(
    binary_redis: aioredis.Redis, tmp_path: Path
) -> None:
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(DetectorUnavailable, match="train-detector"):
        load_seat_model(missing)
    embedding = NaturalnessEmbedding.fit(SynthActions(seed=5, frames=8).batch(0, 20)[0])
    detectors = build_detectors(
        binary_redis, feature_dim=8, embedding=embedding, ood=None, seat_weights=missing
    )
    with pytest.raises(DetectorUnavailable, match=r"nope\.safetensors.*train-detector"):
        detectors["seat"].check()
    with pytest.raises(DetectorUnavailable):
        await detectors["seat"].observe("k", _observation(np.zeros((1, 4, 8, 8, 3), np.uint8)))
    assert SEAT_WEIGHTS.stat().st_size < 1_000_000  # committed small


def test_train_detector_writes_weights_that_load(tmp_path: Path) -> None:
    out = tmp_path / "seat.safetensors"
    result = CliRunner().invoke(
        app, ["train-detector", "--out", str(out), "--steps", "2", "--calibration-clips", "200"]
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output.strip().splitlines()[-1])
    assert printed["wrote"] == str(out)
    model, calibration = load_seat(out)
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["train"]["steps"] == 2 and record["train"]["seed"] == TRAIN_SEED
    assert calibration.ring == 100 and calibration.source["seed"] == 6151
    assert model.embed(SynthActions(seed=5).batch(0, 2)[0]).shape == (2, 64)
    bad = CliRunner().invoke(app, ["train-detector", "--out", str(tmp_path / "x.pt")])
    assert bad.exit_code == 2 and "safetensors" in bad.output
    bench_seed = CliRunner().invoke(app, ["train-detector", "--seed", "31337"])
    assert bench_seed.exit_code == 2 and "benchmark seed" in bench_seed.output


def test_the_served_encoder_is_folded_and_computes_the_same_embeddings() -> None:
    """``load_seat_model`` runs a copy with BatchNorm folded into the convolutions: no norm
    layer left, the same unit vectors as the trained encoder, which stays untouched."""
    model = load_seat_model()
    assert model.runtime is not None
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in model.runtime.modules())
    assert any(isinstance(m, torch.nn.BatchNorm3d) for m in model.encoder.modules())
    clips, _ = SynthActions(seed=FRESH_SEED).batch(3000, 12)
    served = model.embed(clips)
    with torch.inference_mode():
        trained = model.encoder(preprocess(clips, ENCODER_SPEC)).numpy()
    np.testing.assert_allclose(served, trained, atol=1e-5)
    with pytest.raises(ValueError, match="eval mode"):
        folded(SeatEncoder().train())
