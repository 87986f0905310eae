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


def class_balanced(probs: np.ndarray, k: int, bought: np.ndarray) -> np.ndarray:
    """``k`` pool rows that even out the class histogram: each pick goes to the class with the
    fewest answers so far (``bought``: the victim's top-1 counts of the clips already paid for,
    plus the picks), taking that class's candidates the student is most confident of first (the
    likeliest to come back as that class). Classes the student never predicts are skipped."""
    predicted = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    queues = {
        int(c): list(np.flatnonzero(predicted == c)[np.argsort(-confidence[predicted == c])])
        for c in np.unique(predicted)
    }
    counts = bought.astype(np.float64).copy()
    chosen: list[int] = []
    while len(chosen) < k and queues:
        target = min(queues, key=lambda c: (counts[c], c))
        chosen.append(int(queues[target].pop(0)))
        counts[target] += 1
        if not queues[target]:
            del queues[target]
    return np.array(chosen, dtype=np.int64)


def choose(
    strategy: str,
    scores: PoolScores,
    k: int,
    rng: np.random.Generator,
    *,
    centres: np.ndarray | None = None,
    bought_classes: np.ndarray | None = None,
) -> np.ndarray:
    """``k`` indices into the pool by ``strategy`` (random | entropy | margin | coreset |
    balanced)."""
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
    if strategy == "balanced":
        probs = scores.probabilities()
        counts = np.zeros(probs.shape[1]) if bought_classes is None else bought_classes
        return class_balanced(probs, k, counts)
    raise ValueError(f"unknown selection strategy {strategy!r}")
