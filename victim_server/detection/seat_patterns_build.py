"""Build SEAT's attack-pattern bank with the committed encoder, calibrate it, refit the CUSUM.

``python -m victim_server build-seat-patterns`` (:func:`build_patterns`), reproducible from its
seeds (disjoint from every other use: the encoder's 6150/6151, benchmarks 8080/31337, OOD 9001):

1. Patterns: ``per_family`` clips of each family of ``seat_families.FAMILIES`` (seed
   :data:`BANK_SEED`), embedded. References: ``references`` benign SynthActions clips of seed
   :data:`REFERENCE_SEED` (half windows of longer actions, half through H.264, as every
   detector calibration here), embedded.
2. Threshold: benign clips of seed :data:`PATTERN_CALIBRATION_SEED` in same-class sessions (the
   near-copy half's calibration, on a seed it never saw); the pattern threshold is the
   ``1 - quantile`` quantile of their scores, so about ``1 - quantile`` of benign clips lie near
   a pattern.
3. CUSUM: a clip is flagged when it has near earlier queries *or* lies near a pattern; on the
   same sessions, once the ring is full, the combined flag rate times ``margin`` is the benign
   rate, ``attack_rate`` the rate the test is tuned to (below the pattern rate of the bank's
   families on clips it does not hold), ``limit = log(arl)``. Written into the encoder's JSON.
4. Evaluation (recorded): the share of fresh clips (seed :data:`EVALUATION_SEED`) of every
   family flagged by the bank, of the held-out families (``seat_families.HELD_OUT``, never in
   the bank), and of each bank family by the bank less that family (leave one family out).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from shared.synthactions import SynthActions
from victim_server.detection.calibration import benign_calibration_batches
from victim_server.detection.seat import SeatCalibration, kth_nearest, load_seat
from victim_server.detection.seat_encoder import ENCODER_SPEC, SEAT_WEIGHTS, SeatModel
from victim_server.detection.seat_families import FAMILIES, HELD_OUT, render_family
from victim_server.detection.seat_patterns import PatternBank, patterns_path, weights_sha256
from victim_server.detection.seat_train import git_commit, session_order

__all__ = [
    "BANK_SEED",
    "EVALUATION_SEED",
    "PATTERN_CALIBRATION_SEED",
    "REFERENCE_SEED",
    "PatternBuildConfig",
    "build_patterns",
]

BANK_SEED = 6160
EVALUATION_SEED = 6161
PATTERN_CALIBRATION_SEED = 6152
REFERENCE_SEED = 6153


@dataclass(frozen=True)
class PatternBuildConfig:
    per_family: int = 80  # patterns per family
    references: int = 400  # benign reference clips
    k: int = 3  # the density ratio's neighbour
    quantile: float = 0.998  # benign clips near a pattern: about 1 - quantile
    calibration_clips: int = 3000
    evaluation_clips: int = 128  # fresh clips per family for the recorded evaluation
    attack_rate: float = 0.10
    margin: float = 2.0
    arl: float = 1e6


def _benign(model: SeatModel, *, seed: int, clips: int) -> np.ndarray:
    batches = benign_calibration_batches(
        ENCODER_SPEC, seed=seed, clips=clips, batch=100, codec_fraction=0.5, window_fraction=0.5
    )
    return np.concatenate([model.embed(b) for b in batches])


def _rate(flags: np.ndarray) -> float:
    return round(float(np.mean(flags)), 4)


def build_patterns(
    config: PatternBuildConfig, *, weights: Path = SEAT_WEIGHTS
) -> tuple[PatternBank, SeatCalibration]:
    """Build, calibrate and write the bank of the encoder at ``weights`` (to
    :func:`~victim_server.detection.seat_patterns.patterns_path`), and the refitted CUSUM into
    the encoder's JSON; returns both."""
    model, near = load_seat(weights)
    patterns = [
        model.embed(render_family(f, seed=BANK_SEED, start=0, count=config.per_family))
        for f in FAMILIES
    ]
    references = _benign(model, seed=REFERENCE_SEED, clips=config.references)
    clips = config.calibration_clips
    labels = SynthActions(seed=PATTERN_CALIBRATION_SEED).labels(0, clips)
    order = session_order(labels, np.random.default_rng(PATTERN_CALIBRATION_SEED))
    stream = _benign(model, seed=PATTERN_CALIBRATION_SEED, clips=clips)[order]

    def bank_at(threshold: float, record: dict[str, Any]) -> PatternBank:
        return PatternBank(
            np.concatenate(patterns),
            np.repeat(np.arange(len(FAMILIES), dtype=np.int32), config.per_family),
            references,
            FAMILIES,
            config.k,
            threshold,
            record,
        )

    scores = bank_at(1.0, {}).scores(stream)
    threshold = float(np.quantile(scores, 1.0 - config.quantile))
    ring = min(near.ring, clips // 2)
    near_flags = np.array(
        [
            kth_nearest(stream[i - ring : i], stream[i], near.neighbours) < near.threshold
            for i in range(ring, clips)
        ]
    )
    bank = bank_at(threshold, {})
    pattern_flags = bank.flags(stream[ring:])
    observed = float((near_flags | pattern_flags).mean())
    expected = (1.0 - near.source.get("quantile", 0.99)) + (1.0 - config.quantile)
    benign_rate = min(0.5, max(observed, expected) * config.margin)
    if not benign_rate < config.attack_rate < 1.0:
        raise ValueError(f"attack_rate {config.attack_rate} must lie in ({benign_rate}, 1)")
    calibration = replace(
        near,
        benign_rate=benign_rate,
        attack_rate=config.attack_rate,
        limit=math.log(config.arl),
    ).with_source(
        patterns={
            "file": patterns_path(weights).name,
            "seed": PATTERN_CALIBRATION_SEED,
            "observed_flag_rate": round(observed, 4),
            "near_copy_flag_rate": _rate(near_flags),
            "pattern_flag_rate": _rate(pattern_flags),
            "margin": config.margin,
            "arl": config.arl,
        }
    )
    record = {
        "build": asdict(config),
        "seeds": {
            "bank": BANK_SEED,
            "references": REFERENCE_SEED,
            "calibration": PATTERN_CALIBRATION_SEED,
            "evaluation": EVALUATION_SEED,
        },
        "encoder_sha256": weights_sha256(weights),
        "git_commit": git_commit(),
        "benign_calibration_near_pattern": _rate(scores < threshold),
        "evaluation": _evaluate(model, bank, config.evaluation_clips),
    }
    bank = bank_at(threshold, record)
    bank.save(patterns_path(weights))
    meta = {**model.record, "calibration": calibration.to_dict()}
    weights.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    return bank, calibration


def _evaluate(model: SeatModel, bank: PatternBank, clips: int) -> dict[str, Any]:
    """Share of fresh clips of each family near the bank; held-out families; leave one out."""
    fresh = {
        f: model.embed(render_family(f, seed=EVALUATION_SEED, start=0, count=clips))
        for f in (*FAMILIES, *HELD_OUT)
    }
    return {
        "clips_per_family": clips,
        "near_pattern": {f: _rate(bank.flags(v)) for f, v in fresh.items()},
        "held_out_families": list(HELD_OUT),
        "leave_one_family_out": {f: _rate(bank.without(f).flags(fresh[f])) for f in FAMILIES},
    }
