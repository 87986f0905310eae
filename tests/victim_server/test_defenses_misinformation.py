"""Adaptive Misinformation: confident answers pass, unsure ones become misinformation, and
the calibrated tau affects the chosen fraction of benign clips."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from shared.schemas import AdaptiveMisinformation, DefensePolicy, OutputMode
from victim_server.policy.answers import compose_answers
from victim_server.policy.misinformation import (
    calibrate_tau,
    misinform,
    misinformation,
    misinformation_weight,
)
from victim_server.policy.outputs import softmax

K = 16
RNG = np.random.default_rng(0)
# half confident (one big logit), half unsure (flat logits)
LOGITS = np.vstack(
    [
        RNG.normal(size=(50, K)) + 8.0 * np.eye(K)[RNG.integers(0, K, 50)],
        0.3 * RNG.normal(size=(50, K)),
    ]
)
PROBS = softmax(LOGITS)


def test_confident_clips_keep_their_answer_unsure_ones_are_reversed() -> None:
    config = AdaptiveMisinformation(tau=0.5, nu=100.0)
    out = misinform(PROBS, LOGITS, config)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-9)
    confident, unsure = slice(0, 50), slice(50, 100)
    assert np.abs(out[confident] - PROBS[confident]).sum(axis=1).max() < 1e-6
    # unsure clips: the answer's top class is the victim's least likely class
    assert (out[unsure].argmax(1) == LOGITS[unsure].argmin(1)).all()


def test_switch_is_the_papers_sigmoid() -> None:
    config = AdaptiveMisinformation(tau=0.6, nu=20.0)
    probs = np.array([[0.6, 0.4], [0.9, 0.1], [0.3, 0.7]])
    alpha = misinformation_weight(probs, config)
    expected = 1.0 / (1.0 + np.exp(-20.0 * (0.6 - probs.max(axis=1))))
    np.testing.assert_allclose(alpha, expected)
    assert alpha[0] == pytest.approx(0.5)
    # a sharp switch does not overflow
    sharp = misinformation_weight(probs, AdaptiveMisinformation(tau=0.6, nu=10_000.0))
    assert np.isfinite(sharp).all()


def test_misinformation_reverses_the_ranking() -> None:
    mis = misinformation(LOGITS)
    np.testing.assert_array_equal(np.argsort(mis, axis=1), np.argsort(-LOGITS, axis=1))


def test_calibrated_tau_affects_the_chosen_fraction() -> None:
    benign = softmax(RNG.normal(size=(2000, K)) * 3.0)
    tau = calibrate_tau(benign, 0.05)
    held_out = softmax(RNG.normal(size=(2000, K)) * 3.0)
    affected = misinformation_weight(held_out, AdaptiveMisinformation(tau=tau, nu=1000.0)) > 0.5
    assert 0.03 < affected.mean() < 0.07
    with pytest.raises(ValueError, match="fraction"):
        calibrate_tau(benign, 1.5)


def test_parameters_are_validated() -> None:
    for bad in ({"tau": 0.0}, {"tau": 1.0}, {"tau": "0.5"}, {"tau": 0.5, "nu": 0}, {}):
        with pytest.raises(ValidationError):
            AdaptiveMisinformation.model_validate(bad)


def test_compose_answers_applies_it_before_postprocessing() -> None:
    policy = DefensePolicy(adaptive_misinformation=AdaptiveMisinformation(tau=0.5), top_k=3)
    results = compose_answers(
        LOGITS,
        mode=OutputMode.TOPK,
        labels=[str(i) for i in range(K)],
        top_k=3,
        defenses=policy,
        poison=False,
        rng=np.random.default_rng(0),
    )
    assert [r.index for r in results[:50]] == LOGITS[:50].argmax(1).tolist()
    assert [r.index for r in results[50:]] == LOGITS[50:].argmin(1).tolist()
