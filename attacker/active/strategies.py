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
    farthest = _FarthestFirst(pool, centres)
    chosen = np.empty(k, dtype=np.int64)
    for i in range(k):
        pick = int(np.argmax(farthest.nearest)) if np.isfinite(farthest.nearest).any() else 0
        chosen[i] = pick
        farthest.add(pick)
        farthest.nearest[pick] = -np.inf  # never picked twice
    return chosen


BALANCE_ORDERS = ("confident", "uncertain", "diverse")


def class_balanced(
    probs: np.ndarray,
    k: int,
    bought: np.ndarray,
    *,
    order: str = "confident",
    features: np.ndarray | None = None,
    centres: np.ndarray | None = None,
) -> np.ndarray:
    """``k`` pool rows that even out the class histogram: each pick goes to the class with the
    fewest answers so far (``bought``: the victim's top-1 counts of the clips already paid for,
    plus the picks). Within that class ``order`` says which candidate goes first: ``confident``
    (the student's surest, the likeliest to come back as that class), ``uncertain`` (the
    smallest top-1 minus top-2 margin) or ``diverse`` (the farthest, in the student's feature
    space, from every clip bought or picked so far: ``features`` of the pool, ``centres`` of the
    bought clips). Classes the student never predicts are skipped."""
    if order not in BALANCE_ORDERS:
        raise ValueError(f"unknown balance order {order!r}; expected one of {BALANCE_ORDERS}")
    predicted = probs.argmax(axis=1)
    first = -probs.max(axis=1) if order == "confident" else margin_scores(probs)
    queues = {
        int(c): list(np.flatnonzero(predicted == c)[np.argsort(first[predicted == c])])
        for c in np.unique(predicted)
    }
    farthest = _FarthestFirst(features, centres) if order == "diverse" else None
    counts = bought.astype(np.float64).copy()
    chosen: list[int] = []
    while len(chosen) < k and queues:
        target = min(queues, key=lambda c: (counts[c], c))
        queue = queues[target]
        pick = queue.pop(farthest.position(queue) if farthest is not None else 0)
        chosen.append(int(pick))
        if farthest is not None:
            farthest.add(int(pick))
        counts[target] += 1
        if not queue:
            del queues[target]
    return np.array(chosen, dtype=np.int64)


class _FarthestFirst:
    """Each pool row's squared distance to the nearest clip bought or picked so far."""

    def __init__(self, features: np.ndarray | None, centres: np.ndarray | None) -> None:
        if features is None:
            raise ValueError("balance order 'diverse' needs the pool's features")
        self.pool = features.astype(np.float32, copy=False)
        self.sq = (self.pool**2).sum(axis=1)
        self.nearest = np.full(len(self.pool), np.inf, np.float32)
        if centres is not None and len(centres):
            block_rows = 1024
            for start in range(0, len(centres), block_rows):
                block = centres[start : start + block_rows].astype(np.float32, copy=False)
                d = self.sq[:, None] - 2.0 * self.pool @ block.T + (block**2).sum(axis=1)[None]
                self.nearest = np.minimum(self.nearest, d.min(axis=1))

    def position(self, queue: list[int]) -> int:
        """Where in ``queue`` the row farthest from everything so far stands (the first of
        equals, so an empty history keeps the queue's own order)."""
        return int(np.argmax(self.nearest[queue]))

    def add(self, row: int) -> None:
        d = self.sq - 2.0 * self.pool @ self.pool[row] + self.sq[row]
        self.nearest = np.minimum(self.nearest, d)


def choose(
    strategy: str,
    scores: PoolScores,
    k: int,
    rng: np.random.Generator,
    *,
    centres: np.ndarray | None = None,
    bought_classes: np.ndarray | None = None,
    balance_order: str = "confident",
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
        return class_balanced(
            probs,
            k,
            counts,
            order=balance_order,
            features=scores.features,
            centres=centres,
        )
    raise ValueError(f"unknown selection strategy {strategy!r}")
