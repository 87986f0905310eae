"""PRADA against a hand-worked stream and an independent reference implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from shared.detection import NaturalnessEmbedding, PradaConfig, PradaState, observe
from shared.detection.prada import pooled_distances


def test_thresholds_and_growing_set_follow_the_paper_by_hand() -> None:
    """1-D embeddings, one class: every step worked out on paper."""
    state = PradaState(dim=1)
    config = PradaConfig(delta=0.9)
    first = observe(state, config, np.array([0.0]), 0)
    assert first.distance is None and first.joined  # seeds G_0, T_0 = 0
    second = observe(state, config, np.array([4.0]), 0)  # d = 4 > 0: joins, D_G = [4], T = 4 - 0
    assert second.distance == 4.0 and second.joined
    assert state.classes[0].threshold == 4.0
    third = observe(state, config, np.array([1.0]), 0)  # d = min(1, 3) = 1 <= 4: stays out
    assert third.distance == 1.0 and not third.joined
    fourth = observe(state, config, np.array([10.0]), 0)  # d = 6 > 4: joins, D_G = [4, 6]
    assert fourth.joined and state.classes[0].threshold == 4.0  # mean 5 - std 1 = 4
    fifth = observe(state, config, np.array([20.0]), 0)  # d = 10: D_G = [4, 6, 10]
    mean, std = 20 / 3, math.sqrt((16 + 36 + 100) / 3 - (20 / 3) ** 2)
    assert fifth.joined and state.classes[0].threshold == pytest.approx(max(4.0, mean - std))
    assert state.classes[0].distances == [4.0, 1.0, 6.0, 10.0]
    assert state.classes[0].members[:, 0].tolist() == [0.0, 4.0, 10.0, 20.0]


def _reference(
    stream: list[tuple[np.ndarray, int]], delta: float
) -> tuple[list[float], int | None]:
    """A plain transcription of the reference logic, for comparison."""
    sets: dict[int, list[np.ndarray]] = {}
    thresholds: dict[int, float] = {}
    d_all: dict[int, list[float]] = {}
    d_g: dict[int, list[float]] = {}
    ws: list[float] = []
    alarm = None
    for n, (x, c) in enumerate(stream, start=1):
        if c not in sets:
            sets[c], thresholds[c], d_all[c], d_g[c] = [x], 0.0, [], []
        else:
            d = min(float(np.linalg.norm(x - g)) for g in sets[c])
            d_all[c].append(d)
            if d > thresholds[c]:
                sets[c].append(x)
                d_g[c].append(d)
                thresholds[c] = max(thresholds[c], float(np.mean(d_g[c]) - np.std(d_g[c])))
        if n % 10 == 0:
            pooled = np.concatenate(
                [np.array(v) for v in d_all.values() if len(v) >= 10] or [np.empty(0)]
            )
            if pooled.size:
                pooled = pooled[np.abs(pooled - pooled.mean()) <= 3 * pooled.std()]
            if pooled.size > 100:
                w = float(stats.shapiro(pooled).statistic)
                ws.append(w)
                if w < delta and alarm is None:
                    alarm = n
    return ws, alarm


def test_matches_the_reference_on_a_stream_that_turns_synthetic() -> None:
    """200 natural-looking queries, then near-duplicates of one seed: W falls, alarm fires."""
    rng = np.random.default_rng(0)
    natural = [(rng.normal(size=4).astype(np.float32), int(rng.integers(3))) for _ in range(200)]
    seed = rng.normal(size=4).astype(np.float32)
    synthetic = [(seed + rng.normal(scale=0.01, size=4).astype(np.float32), 0) for _ in range(200)]
    stream = natural + synthetic
    expected_ws, expected_alarm = _reference(stream, delta=0.9)
    state = PradaState(dim=4)
    config = PradaConfig(delta=0.9)
    ws = [o.w for o in (observe(state, config, x, c) for x, c in stream) if o.tested]
    assert ws == pytest.approx(expected_ws, abs=1e-6)
    assert state.alarm_query == expected_alarm
    assert expected_alarm is not None and expected_alarm > 200  # fired on the synthetic part


def test_no_test_before_more_than_100_pooled_distances() -> None:
    state = PradaState(dim=2)
    rng = np.random.default_rng(1)
    outcomes = [observe(state, PradaConfig(), rng.normal(size=2), 0) for _ in range(100)]
    assert all(not o.tested for o in outcomes)  # 99 distances at most
    more = [observe(state, PradaConfig(), rng.normal(size=2), 0) for _ in range(10)]
    assert [o.tested for o in more][-1] and pooled_distances(state).size > 100


def test_cost_is_bounded_by_the_set_and_window_caps() -> None:
    state = PradaState(dim=3)
    config = PradaConfig(max_set=50, max_distances=80)
    rng = np.random.default_rng(2)
    for _ in range(1000):
        observe(state, config, rng.normal(size=3) * 100, 0)
    cls = state.classes[0]
    assert cls.members.shape[0] <= 50 and len(cls.distances) <= 80


def test_embedding_collapses_noise_but_spreads_natural_clips() -> None:
    from shared.synthactions import SynthActions

    natural, _ = SynthActions(seed=3).batch(0, 64)
    embedding = NaturalnessEmbedding.fit(SynthActions(seed=4).batch(0, 400)[0])
    noise = np.random.default_rng(0).integers(0, 256, size=(32, 16, 32, 32, 3), dtype=np.uint8)
    e_noise, e_nat = embedding(noise), embedding(natural)
    assert e_noise.shape == (32, 7) and e_noise.min() >= 0 and e_noise.max() <= 1
    assert len(np.unique(e_noise, axis=0)) <= 3  # noise lands on (almost) one corner
    assert len(np.unique(e_nat, axis=0)) > 50
    assert NaturalnessEmbedding.from_json(embedding.to_json()) == embedding
