"""Prediction poisoning (MAD): answers stay on the simplex and within budget, MAD-argmax keeps
top-1, and the closed-form choice is the candidate that turns the surrogate's real (autograd)
gradient the furthest."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shared.schemas import (
    AdaptiveMisinformation,
    ClipResult,
    DefensePolicy,
    DetectionPolicy,
    OutputMode,
    PredictionPoisoning,
)
from victim_server.policy.answers import compose_answers
from victim_server.policy.fingerprint import fingerprint_secret, policy_fingerprint
from victim_server.policy.mad import mad_perturb, surrogate_head

K, D = 16, 32
RNG = np.random.default_rng(0)
PROBS = RNG.dirichlet(np.full(K, 0.3), size=64)
FEATURES = RNG.normal(size=(64, D)).clip(0.0, None)  # post-activation-like


def _on_simplex(rows: np.ndarray) -> None:
    np.testing.assert_allclose(rows.sum(axis=1), 1.0, atol=1e-9)
    assert (rows >= 0).all()


@pytest.mark.parametrize(("norm", "epsilon"), [("l1", 0.5), ("l1", 1.5), ("l2", 0.3)])
@pytest.mark.parametrize("keep_argmax", [True, False])
def test_answers_stay_within_budget(norm: str, epsilon: float, keep_argmax: bool) -> None:
    config = PredictionPoisoning(epsilon=epsilon, norm=norm, keep_argmax=keep_argmax)  # type: ignore[arg-type]
    out = mad_perturb(PROBS, FEATURES, config)
    _on_simplex(out)
    order = 1 if norm == "l1" else 2
    dist = np.linalg.norm(out - PROBS, ord=order, axis=1)
    assert (dist <= epsilon + 1e-9).all()
    assert dist.mean() > 0.5 * epsilon  # it does use its budget
    if keep_argmax:
        assert (out.argmax(1) == PROBS.argmax(1)).all()


def test_without_argmax_a_large_budget_flips_top1() -> None:
    out = mad_perturb(PROBS, FEATURES, PredictionPoisoning(epsilon=2.0, keep_argmax=False))
    # the whole budget reaches a vertex: the answer is one-hot, mostly not the victim's class
    np.testing.assert_allclose(out.max(axis=1), 1.0)
    assert (out.argmax(1) != PROBS.argmax(1)).mean() > 0.5


def _surrogate_gradient(x: np.ndarray, target: np.ndarray, seed: int) -> torch.Tensor:
    """G^T target by autograd: the gradient of sum_k target_k log p_k over all head params."""
    head = surrogate_head(x.shape[0], target.shape[0], seed)
    params = [t.clone().requires_grad_(True) for t in (head.w1, head.b1, head.w2, head.b2)]
    w1, b1, w2, b2 = params
    xt = torch.from_numpy(x)
    log_p = torch.log_softmax(w2 @ torch.relu(w1 @ xt + b1) + b2, dim=-1)
    (torch.from_numpy(target) * log_p).sum().backward()
    return torch.cat([p.grad.flatten() for p in params if p.grad is not None])


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


@pytest.mark.parametrize("keep_argmax", [True, False])
def test_choice_maximises_the_true_gradient_deviation(keep_argmax: bool) -> None:
    config = PredictionPoisoning(epsilon=0.6, keep_argmax=keep_argmax, surrogate_seed=7)
    out = mad_perturb(PROBS[:12], FEATURES[:12], config)
    for row in range(12):
        y, x = PROBS[row], FEATURES[row]
        original = _surrogate_gradient(x, y, 7)
        chosen = _cosine(_surrogate_gradient(x, out[row], 7), original)
        # every other budget-limited step toward a vertex, argmax-preserving when asked
        for k in range(K):
            step = min(1.0, 0.6 / (2 * (1 - y[k])))
            candidate = y + step * (np.eye(K)[k] - y)
            if keep_argmax and k != y.argmax() and candidate[k] >= candidate.max() - 1e-3:
                continue
            other = _cosine(_surrogate_gradient(x, candidate, 7), original)
            assert chosen <= other + 1e-6
        assert chosen < 0.99  # the gradient really turns


def test_mad_turns_gradients_more_than_random_moves_of_equal_size() -> None:
    config = PredictionPoisoning(epsilon=0.5, keep_argmax=True)
    out = mad_perturb(PROBS[:20], FEATURES[:20], config)
    rng = np.random.default_rng(1)
    mad_cos, random_cos = [], []
    for row in range(20):
        y, x = PROBS[row], FEATURES[row]
        original = _surrogate_gradient(x, y, 0)
        mad_cos.append(_cosine(_surrogate_gradient(x, out[row], 0), original))
        direction = rng.dirichlet(np.ones(K)) - y
        size = np.abs(out[row] - y).sum() / np.abs(direction).sum()
        noisy = y + size * direction
        random_cos.append(_cosine(_surrogate_gradient(x, noisy, 0), original))
    assert np.mean(mad_cos) < np.mean(random_cos) - 0.1


def test_surrogate_seed_matters_and_answers_are_deterministic() -> None:
    a = mad_perturb(PROBS, FEATURES, PredictionPoisoning(surrogate_seed=1))
    b = mad_perturb(PROBS, FEATURES, PredictionPoisoning(surrogate_seed=1))
    c = mad_perturb(PROBS, FEATURES, PredictionPoisoning(surrogate_seed=2))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_argmax_holds_for_one_hot_and_near_tied_answers() -> None:
    near_tie = np.full((1, K), 0.0005 / (K - 2))
    near_tie[0, :2] = [0.5, 0.4995]
    rows = np.vstack([np.eye(K)[:4], near_tie])
    out = mad_perturb(rows, FEATURES[:5], PredictionPoisoning(epsilon=1.0))
    _on_simplex(out)
    assert (out.argmax(1) == rows.argmax(1)).all()
    top = out[np.arange(5), rows.argmax(1)]
    assert (top > np.sort(out, axis=1)[:, -2]).all()
    assert np.abs(out[:4] - rows[:4]).sum(axis=1).min() > 0.5  # one-hot answers still move


def _answer(
    logits: np.ndarray, policy: DefensePolicy, features: np.ndarray | None = None
) -> list[ClipResult]:
    return compose_answers(
        logits,
        mode=OutputMode.PROBS,
        labels=[str(i) for i in range(K)],
        top_k=5,
        defenses=policy,
        poison=False,
        rng=np.random.default_rng(0),
        features=features,
    )


def test_compose_answers_uses_features_and_falls_back_to_logits() -> None:
    logits = np.log(PROBS[:8])
    policy = DefensePolicy(prediction_poisoning=PredictionPoisoning(epsilon=0.4))
    with_features = _answer(logits, policy, FEATURES[:8])
    without = _answer(logits, policy)
    plain = _answer(logits, DefensePolicy())
    for a, b, c in zip(with_features, without, plain, strict=True):
        assert a.index == b.index == c.index  # keep_argmax
        assert a.probs is not None and b.probs is not None and c.probs is not None
        assert np.abs(np.subtract(a.probs, c.probs)).sum() > 0.1
        assert np.abs(np.subtract(b.probs, c.probs)).sum() > 0.1
    assert any(a.probs != b.probs for a, b in zip(with_features, without, strict=True))


def test_each_setting_has_its_own_policy_fingerprint() -> None:
    secret = fingerprint_secret("test-admin-token-0123456789abcdef")
    policies = [
        DefensePolicy(),
        DefensePolicy(prediction_poisoning=PredictionPoisoning()),
        DefensePolicy(prediction_poisoning=PredictionPoisoning(surrogate_seed=1)),
        DefensePolicy(prediction_poisoning=PredictionPoisoning(keep_argmax=False)),
        DefensePolicy(adaptive_misinformation=AdaptiveMisinformation(tau=0.5)),
        DefensePolicy(adaptive_misinformation=AdaptiveMisinformation(tau=0.6)),
    ]
    prints = {
        policy_fingerprint(
            output=OutputMode.PROBS,
            top_k=5,
            defenses=policy,
            detection=DetectionPolicy(),
            secret=secret,
        )
        for policy in policies
    }
    assert len(prints) == len(policies)
