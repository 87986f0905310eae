"""Pick ``k`` of a scored candidate pool. Every strategy returns pool indices in the order they
will be sent (deterministic for a given generator)."""

from __future__ import annotations

import numpy as np

from attacker.active.scoring import PoolScores


def entropy_scores(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy per row (nats); higher = less sure."""
    return -(probs * np.log(np.clip(probs, 1e-12, 1.0))).sum(axis=1)


def margin_scores(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability per row; lower = less sure."""
    top2 = np.sort(probs, axis=1)[:, -2:]
    margins: np.ndarray = top2[:, 1] - top2[:, 0]
    return margins


def k_center_greedy(pool: np.ndarray, centres: np.ndarray, k: int) -> np.ndarray:
    """Indices of ``k`` pool rows chosen one by one, each the farthest (Euclidean) from the
    centres so far (Sener & Savarese, 2018); ``centres`` may be empty."""
    pool = pool.astype(np.float32, copy=False)
    sq = (pool**2).sum(axis=1)
    if len(centres):
        centres = centres.astype(np.float32, copy=False)
        nearest = np.full(len(pool), np.inf, np.float32)
        for start in range(0, len(centres), 1024):
            block = centres[start : start + 1024]
            d = sq[:, None] - 2.0 * pool @ block.T + (block**2).sum(axis=1)[None, :]
            nearest = np.minimum(nearest, d.min(axis=1))
    else:
        nearest = np.full(len(pool), np.inf, np.float32)
    chosen = np.empty(k, dtype=np.int64)
    for i in range(k):
        pick = int(np.argmax(nearest)) if np.isfinite(nearest).any() else 0
        chosen[i] = pick
        d = sq - 2.0 * pool @ pool[pick] + sq[pick]
        nearest = np.minimum(nearest, d)
        nearest[pick] = -np.inf  # never picked twice
    return chosen


def choose(
    strategy: str,
    scores: PoolScores,
    k: int,
    rng: np.random.Generator,
    *,
    centres: np.ndarray | None = None,
) -> np.ndarray:
    """``k`` indices into the pool by ``strategy`` (random | entropy | margin | coreset)."""
    n = len(scores.logits)
    k = min(k, n)
    if strategy == "random":
        return np.sort(rng.choice(n, size=k, replace=False))
    if strategy == "entropy":
        # Ties (e.g. identical clips) broken at random, not by pool position.
        order = np.lexsort((rng.random(n), -entropy_scores(scores.probabilities())))
        return order[:k]
    if strategy == "margin":
        order = np.lexsort((rng.random(n), margin_scores(scores.probabilities())))
        return order[:k]
    if strategy == "coreset":
        existing = centres if centres is not None else np.empty((0, scores.features.shape[1]))
        return k_center_greedy(scores.features, existing, k)
    raise ValueError(f"unknown selection strategy {strategy!r}")
