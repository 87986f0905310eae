"""PRADA (Juuti et al., EuroS&P 2019): detect extraction by the shape of a client's query stream.

Reference logic, per API key (kept exactly):

* one growing set G_c per predicted class c; the first query of class c seeds G_c, T_c = 0;
* each later query of class c: d = min L2 distance to G_c, appended to D_c; if d > T_c the
  query joins G_c, d is appended to D_Gc and T_c = max(T_c, mean(D_Gc) - std(D_Gc));
* every 10th query: pool D_c over the classes with at least 10 distances, drop values beyond
  3 sigma; when more than 100 remain, W = Shapiro-Wilk statistic; alarm when W < delta.

Benign traffic gives roughly normal minimum distances; synthetic attack queries do not.

Bounded cost (the only departures from the paper, both documented): G_c keeps at most
``max_set`` vectors per class (past that, a newcomer replaces a member chosen by a seeded
generator: reservoir sampling), and the test pools at most the latest ``max_distances``
distances per class. A query then costs O(max_set x dim) for the nearest-member search, and a
test O(n log n) in the pooled count n <= classes x max_distances, whatever the history length.
D_Gc enters only through its running mean and standard deviation, kept as sums.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

TEST_EVERY = 10
MIN_CLASS_DISTANCES = 10
MIN_POOLED = 100
TRIM_SIGMA = 3.0


@dataclass
class ClassState:
    members: np.ndarray  # (m, dim) float32: G_c
    seen: int = 0  # vectors ever offered to G_c (for reservoir sampling)
    threshold: float = 0.0  # T_c
    g_count: int = 0  # |D_Gc|
    g_sum: float = 0.0
    g_sumsq: float = 0.0
    distances: list[float] = field(default_factory=list)  # D_c (latest max_distances)


@dataclass
class PradaState:
    """One key's detector state (the in-memory form of what Redis stores)."""

    dim: int
    classes: dict[int, ClassState] = field(default_factory=dict)
    queries: int = 0
    w: float | None = None
    pooled: int = 0  # distances in the last test
    alarm_query: int | None = None  # query count when the first alarm fired


@dataclass(frozen=True)
class PradaConfig:
    delta: float = 0.9
    max_set: int = 1024
    max_distances: int = 512
    seed: int = 0


@dataclass(frozen=True)
class QueryOutcome:
    """What one query changed, so a store can persist just that."""

    label: int
    distance: float | None  # None for the query that seeded its class
    joined: bool
    slot: int | None  # index in G_c where the vector went (append or replacement)
    tested: bool
    w: float | None
    alarm: bool  # the detector is in alarm after this query


def _rng(config: PradaConfig, label: int, seen: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, label, seen])


def observe(state: PradaState, config: PradaConfig, vector: np.ndarray, label: int) -> QueryOutcome:
    """Feed one query (its embedding and predicted class) through PRADA; mutates ``state``."""
    vector = np.asarray(vector, dtype=np.float32).reshape(-1)
    if vector.shape[0] != state.dim:
        raise ValueError(f"embedding has {vector.shape[0]} values, the detector {state.dim}")
    state.queries += 1
    cls = state.classes.get(label)
    distance: float | None = None
    joined, slot = False, None
    if cls is None:
        state.classes[label] = ClassState(members=vector[None].copy(), seen=1)
        joined, slot = True, 0
    else:
        diffs = cls.members - vector[None]
        distance = float(np.sqrt(np.min(np.einsum("ij,ij->i", diffs, diffs))))
        cls.distances.append(distance)
        if len(cls.distances) > config.max_distances:
            del cls.distances[: len(cls.distances) - config.max_distances]
        if distance > cls.threshold:
            joined = True
            cls.g_count += 1
            cls.g_sum += distance
            cls.g_sumsq += distance * distance
            mean = cls.g_sum / cls.g_count
            std = math.sqrt(max(0.0, cls.g_sumsq / cls.g_count - mean * mean))
            cls.threshold = max(cls.threshold, mean - std)
            slot = _admit(cls, vector, config, label)
    tested, w = False, state.w
    if state.queries % TEST_EVERY == 0:
        w_new, pooled = shapiro_w(state)
        if w_new is not None:
            tested, w, state.w, state.pooled = True, w_new, w_new, pooled
            if w_new < config.delta and state.alarm_query is None:
                state.alarm_query = state.queries
    return QueryOutcome(
        label=label,
        distance=distance,
        joined=joined,
        slot=slot,
        tested=tested,
        w=w,
        alarm=state.alarm_query is not None,
    )


def _admit(cls: ClassState, vector: np.ndarray, config: PradaConfig, label: int) -> int | None:
    """Add ``vector`` to G_c, or (when full) replace a reservoir-chosen member; slot or None."""
    cls.seen += 1
    if cls.members.shape[0] < config.max_set:
        cls.members = np.concatenate([cls.members, vector[None]])
        return cls.members.shape[0] - 1
    slot = int(_rng(config, label, cls.seen).integers(cls.seen))
    if slot >= config.max_set:
        return None  # reservoir sampling keeps each of the `seen` vectors with equal chance
    cls.members[slot] = vector
    return slot


def pooled_distances(state: PradaState) -> np.ndarray:
    """D_c pooled over classes with >= 10 distances, values beyond 3 sigma dropped."""
    parts = [c.distances for c in state.classes.values() if len(c.distances) >= MIN_CLASS_DISTANCES]
    if not parts:
        return np.empty(0)
    pooled = np.concatenate([np.asarray(p, dtype=np.float64) for p in parts])
    mean, std = pooled.mean(), pooled.std()
    if std > 0:
        pooled = pooled[np.abs(pooled - mean) <= TRIM_SIGMA * std]
    return pooled


def shapiro_w(state: PradaState) -> tuple[float | None, int]:
    pooled = pooled_distances(state)
    if pooled.size <= MIN_POOLED:
        return None, int(pooled.size)
    if np.ptp(pooled) == 0:
        return 0.0, int(pooled.size)  # all distances equal: as far from normal as it gets
    with warnings.catch_warnings():  # past 5,000 values scipy warns about the p-value; W is fine
        warnings.simplefilter("ignore", UserWarning)
        w = float(stats.shapiro(pooled).statistic)
    return w, int(pooled.size)
