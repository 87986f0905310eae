"""The OOD rate monitor's math: per-clip scores, the calibration, the Bernoulli CUSUM."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shared.detection.ood import CusumState, OodCalibration, clip_scores, cusum_observe


def test_scores_are_energy_and_one_minus_max_softmax() -> None:
    logits = np.array([[10.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    energy = clip_scores(logits, "energy")
    assert energy[0] == pytest.approx(-math.log(math.exp(10) + 2))
    assert energy[1] == pytest.approx(-(1 + math.log(3)))
    msp = clip_scores(logits, "msp")
    assert msp[0] == pytest.approx(1 - math.exp(10) / (math.exp(10) + 2))
    assert msp[1] == pytest.approx(2 / 3)
    assert (energy[1] > energy[0]) and (msp[1] > msp[0])  # the unsure clip is the odd one


def _calibration(seed: int = 0) -> OodCalibration:
    return OodCalibration.fit(np.random.default_rng(seed).normal(size=5000), quantile=0.99)


def test_calibration_flags_the_benign_tail_and_round_trips() -> None:
    calibration = _calibration()
    assert calibration.threshold == pytest.approx(2.33, abs=0.1)  # the normal's 99th percentile
    assert calibration.benign_rate == pytest.approx(0.02)  # 1% observed, times the margin 2
    up, down = calibration.increments
    assert up > 0 > down
    assert calibration.limit == pytest.approx(math.log(1e6))
    assert OodCalibration.from_json(calibration.to_json()) == calibration
    with pytest.raises(ValueError, match="at least 100"):
        OodCalibration.fit(np.zeros(10))


def test_cusum_alarms_fast_on_a_flagged_stream_and_never_on_the_benign_rate() -> None:
    calibration = _calibration()
    attack = CusumState()
    cusum_observe(attack, calibration, np.ones(100, dtype=bool))
    up, _ = calibration.increments
    assert attack.alarm_query == math.ceil(calibration.limit / up)
    # Half the clips flagged (an attack mixed with natural clips) still alarms within 100.
    mixed = CusumState()
    cusum_observe(mixed, calibration, np.arange(1000) % 2 == 0)
    assert mixed.alarm_query is not None and mixed.alarm_query < 100
    # Benign traffic at the calibration's own flag rate (1%): 100,000 queries, no alarm.
    benign = CusumState()
    flags = np.random.default_rng(1).random(100_000) < 0.01
    cusum_observe(benign, calibration, flags)
    assert benign.alarm_query is None and benign.flagged == int(flags.sum())
    assert benign.queries == 100_000
