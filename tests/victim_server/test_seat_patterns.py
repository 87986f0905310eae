"""SEAT's second half: queries near known attack patterns. The committed bank on unseen seeds
through the Redis-backed detector (synthetic streams without near copies alarm, benign sessions
do not), the bank's validation and the near-copy fallback, and build-seat-patterns."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as aioredis
from typer.testing import CliRunner

from shared.synthactions import NUM_CLASSES, SynthActions
from victim_server.cli import app
from victim_server.detection.base import Observation
from victim_server.detection.seat import SeatDetector, load_seat
from victim_server.detection.seat_encoder import SEAT_WEIGHTS
from victim_server.detection.seat_families import FAMILIES, HELD_OUT, render_family
from victim_server.detection.seat_patterns import (
    PatternBank,
    PatternBankError,
    load_patterns,
    patterns_path,
)
from victim_server.detection.seat_patterns_build import BANK_SEED
from victim_server.detection.seat_train import session_order

# Seeds no part of SEAT has seen (encoder 6150/6151, bank 6152/6153/6160/6161).
FRESH_SEED = 4713


def _observation(clips: np.ndarray) -> Observation:
    return Observation(clips, np.zeros((len(clips), NUM_CLASSES), np.float32), None)


async def _send(detector: SeatDetector, key: str, clips: np.ndarray) -> None:
    for start in range(0, len(clips), 10):
        await detector.observe(key, _observation(clips[start : start + 10]))


def _copy_encoder(tmp_path: Path) -> Path:
    weights = tmp_path / "enc.safetensors"
    shutil.copy(SEAT_WEIGHTS, weights)
    shutil.copy(SEAT_WEIGHTS.with_suffix(".json"), weights.with_suffix(".json"))
    return weights


def test_committed_bank_is_small_valid_and_calibrated() -> None:
    bank = load_patterns(patterns_path(SEAT_WEIGHTS), weights=SEAT_WEIGHTS, dim=64)
    assert bank.family_names == FAMILIES and not set(HELD_OUT) & set(FAMILIES)
    assert len(bank.patterns) <= 512 and len(bank.references) <= 512
    assert patterns_path(SEAT_WEIGHTS).stat().st_size < 300_000
    assert bank.record["benign_calibration_near_pattern"] <= 0.005
    # reproducible: the bank's clips render and embed again to its patterns
    model, _ = load_seat()
    own = render_family("warped_image", seed=BANK_SEED, start=0, count=3)
    rows = bank.patterns[bank.families == FAMILIES.index("warped_image")][:3]
    np.testing.assert_allclose(model.embed(own), rows, atol=1e-4)
    # fresh clips: uniform noise always lies near the bank, benign clips of an unseen seed rarely
    noise = render_family("uniform_noise", seed=FRESH_SEED, start=0, count=20)
    assert bank.flags(model.embed(noise)).all()
    benign, _ = SynthActions(seed=FRESH_SEED).batch(0, 200)
    assert bank.flags(model.embed(benign)).mean() < 0.02


async def test_distinct_synthetic_streams_alarm_benign_sessions_do_not(
    binary_redis: aioredis.Redis,
) -> None:
    """Affine-warped images and a family the bank never held (slideshows), every clip new (no
    near copies): the near-copy half alone stays quiet, with the bank they alarm within 400
    queries; 500 benign clips in same-class sessions raise nothing."""
    detector = SeatDetector(binary_redis)
    assert detector.patterns is not None and detector.calibration is not None
    warped = render_family("warped_image", seed=FRESH_SEED, start=0, count=400)
    slides = render_family("slideshow", seed=FRESH_SEED, start=0, count=400)
    clips, labels = SynthActions(seed=FRESH_SEED + 1).batch(0, 500)
    benign = clips[session_order(labels, np.random.default_rng(0))]
    for key, stream in (("warped", warped), ("slides", slides), ("benign", benign)):
        await _send(detector, key, stream)
    for key in ("warped", "slides"):
        verdict = await detector.status(key)
        assert verdict.alarm and verdict.alarm_query is not None and verdict.alarm_query <= 400
        hits = int(await binary_redis.hget(f"vs:{{{key}}}:det:seat", "near_pattern") or 0)
        assert hits >= 40
    quiet = await detector.status("benign")
    assert quiet.queries == 500 and not quiet.alarm
    assert (quiet.score or 0.0) < detector.calibration.limit / 2
    detector.patterns = None  # the near-copy half alone
    await _send(detector, "warped-near-only", warped)
    assert not (await detector.status("warped-near-only")).alarm


async def test_bank_missing_corrupt_or_foreign_falls_back_to_near_copies(
    binary_redis: aioredis.Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    weights = _copy_encoder(tmp_path)
    bank_file = patterns_path(weights)
    committed = load_patterns(patterns_path(SEAT_WEIGHTS), weights=SEAT_WEIGHTS, dim=64)
    cases = {
        "build-seat-patterns": None,  # missing
        "cannot be read": b"not a safetensors file",
        "another encoder": {**committed.record, "encoder_sha256": "0" * 64},
    }
    for why, content in cases.items():
        bank_file.unlink(missing_ok=True)
        if isinstance(content, bytes):
            bank_file.write_bytes(content)
        elif content is not None:
            PatternBank(
                committed.patterns,
                committed.families,
                committed.references,
                committed.family_names,
                committed.k,
                committed.threshold,
                content,
            ).save(bank_file)
        with caplog.at_level(logging.WARNING, logger="vidsteal.victim.detection"):
            detector = SeatDetector(binary_redis, path=weights)
        assert detector.patterns is None and why in (detector.patterns_why or "")
        assert any("near copies only" in r.getMessage() for r in caplog.records)
        caplog.clear()
        detector.check()  # still available: the near-copy half runs
    clip = SynthActions(seed=FRESH_SEED).batch(0, 1)[0]
    await _send(detector, "k", np.repeat(clip, 30, axis=0))
    assert (await detector.status("k")).alarm
    with pytest.raises(PatternBankError, match="unit vectors"):
        PatternBank(
            committed.patterns * 2,
            committed.families,
            committed.references,
            committed.family_names,
            committed.k,
            committed.threshold,
        )


def test_build_seat_patterns_writes_a_bank_that_loads(tmp_path: Path) -> None:
    weights = _copy_encoder(tmp_path)
    result = CliRunner().invoke(
        app,
        [
            "build-seat-patterns",
            "--weights",
            str(weights),
            "--per-family",
            "4",
            "--references",
            "8",
            "--calibration-clips",
            "200",
            "--evaluation-clips",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output.strip().splitlines()[-1])
    assert printed["wrote"] == str(patterns_path(weights)) and printed["patterns"] == 4 * len(
        FAMILIES
    )
    bank = load_patterns(patterns_path(weights), weights=weights, dim=64)
    assert bank.references.shape == (8, 64) and set(bank.record["evaluation"]["near_pattern"]) == {
        *FAMILIES,
        *HELD_OUT,
    }
    calibration = json.loads(weights.with_suffix(".json").read_text())["calibration"]
    assert calibration["attack_rate"] == 0.1 and calibration["source"]["patterns"]["seed"] == 6152
    missing = CliRunner().invoke(
        app, ["build-seat-patterns", "--weights", str(tmp_path / "none.safetensors")]
    )
    assert missing.exit_code == 2 and "train-detector" in missing.output
