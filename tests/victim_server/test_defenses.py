"""Output defenses: each keeps what it promises; probabilities always sum to 1."""

from __future__ import annotations

import numpy as np
import pytest

from shared.schemas import DefensePolicy, GaussianNoise, OutputMode, ReverseSigmoid
from victim_server.policy.answers import compose_answers
from victim_server.policy.defenses import (
    apply_defenses,
    gaussian_noise,
    label_only,
    reverse_sigmoid,
    round_to,
    shuffle_top_k,
    top_k,
)

RNG = np.random.default_rng(0)
PROBS = RNG.dirichlet(np.full(16, 0.3), size=200)


def _sums_to_one(rows: np.ndarray) -> None:
    np.testing.assert_allclose(rows.sum(axis=1), 1.0, atol=1e-9)
    assert (rows >= 0).all()


@pytest.mark.parametrize(
    "fn",
    [
        lambda p: top_k(p, 3),
        lambda p: reverse_sigmoid(p, 0.2, 0.3),
        label_only,
    ],
)
def test_top1_preserving_defenses(fn) -> None:  # type: ignore[no-untyped-def]
    out = fn(PROBS)
    _sums_to_one(out)
    assert (out.argmax(1) == PROBS.argmax(1)).all()


def test_rounding_keeps_top1_unless_the_top_two_round_together() -> None:
    out = round_to(PROBS, 2)
    _sums_to_one(out)
    ordered = -np.sort(-PROBS, axis=1)
    clear = ordered[:, 0] - ordered[:, 1] > 0.01
    assert clear.sum() > 150
    assert (out.argmax(1)[clear] == PROBS.argmax(1)[clear]).all()


def test_top_k_keeps_exactly_k_classes() -> None:
    out = top_k(PROBS, 3)
    assert ((out > 0).sum(axis=1) <= 3).all()


def test_rounding_has_d_decimals() -> None:
    out = round_to(PROBS, 2)
    off_top = np.delete(out, PROBS.argmax(1)[:, None] + 16 * np.arange(200)[:, None], None)
    np.testing.assert_allclose(off_top, np.round(off_top, 2), atol=1e-12)


def test_reverse_sigmoid_changes_the_distribution() -> None:
    out = reverse_sigmoid(PROBS, 0.7, 0.4)
    _sums_to_one(out)
    assert np.abs(out - PROBS).max() > 0.05


def test_noise_is_renormalised_and_random() -> None:
    a = gaussian_noise(PROBS, 0.05, np.random.default_rng(1))
    b = gaussian_noise(PROBS, 0.05, np.random.default_rng(2))
    _sums_to_one(a)
    assert not np.allclose(a, b)


def test_poison_keeps_shape_and_scores_but_moves_them() -> None:
    out = shuffle_top_k(PROBS, 5, np.random.default_rng(3))
    _sums_to_one(out)
    np.testing.assert_allclose(np.sort(out, axis=1), np.sort(PROBS, axis=1))
    assert (out.argmax(1) != PROBS.argmax(1)).mean() > 0.5


def test_composition_order_and_label_only() -> None:
    policy = DefensePolicy(
        reverse_sigmoid=ReverseSigmoid(beta=0.1, gamma=0.2),
        gaussian_noise=GaussianNoise(sigma=0.0),
        top_k=4,
        round_decimals=3,
        label_only=True,
    )
    out = apply_defenses(PROBS, policy, np.random.default_rng(0))
    assert set(np.unique(out)) == {0.0, 1.0}
    assert (out.argmax(1) == PROBS.argmax(1)).all()


def test_logits_keys_see_log_probabilities_of_the_defended_answer() -> None:
    logits = np.log(PROBS[:4])
    results = compose_answers(
        logits,
        mode=OutputMode.LOGITS,
        labels=[str(i) for i in range(16)],
        top_k=5,
        defenses=DefensePolicy(top_k=2),
        poison=False,
        rng=np.random.default_rng(0),
    )
    shown = np.array([r.logits for r in results])
    assert ((np.exp(shown) > 1e-6).sum(axis=1) == 2).all()
