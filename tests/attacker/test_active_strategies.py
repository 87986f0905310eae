"""Selection strategies pick what they claim to; the bandit moves toward the part that pays."""

from __future__ import annotations

import numpy as np
import pytest

from attacker.active import PoolScores, SourceBandit, choose, round_sizes
from attacker.active.strategies import k_center_greedy


def _scores(logits: list[list[float]], features: np.ndarray | None = None) -> PoolScores:
    array = np.array(logits, dtype=np.float32)
    return PoolScores(
        logits=array, features=array if features is None else features.astype(np.float32)
    )


def test_entropy_and_margin_pay_for_the_clips_the_student_is_least_sure_of() -> None:
    scores = _scores([[9, 0, 0], [1, 1, 1], [5, 0, 0], [2, 2, 0], [0, 0, 7]])
    rng = np.random.default_rng(0)
    assert set(choose("entropy", scores, 2, rng)) == {1, 3}
    # Row 3 has two classes tied (margin 0); row 1 has three (also margin 0).
    assert set(choose("margin", scores, 2, rng)) == {1, 3}
    assert choose("entropy", scores, 1, rng)[0] == 1  # the uniform row is the most uncertain


def test_random_picks_distinct_clips() -> None:
    scores = _scores([[0.0, 1.0]] * 50)
    chosen = choose("random", scores, 20, np.random.default_rng(3))
    assert len(set(chosen.tolist())) == 20 and chosen.max() < 50


def test_k_center_covers_every_cluster_and_skips_what_is_already_bought() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    pool = np.concatenate([c + 0.1 * rng.standard_normal((20, 2)) for c in centres])
    picked = k_center_greedy(pool, np.empty((0, 2)), 3)
    assert sorted(int(i) // 20 for i in picked) == [0, 1, 2]
    # With clusters 0 and 1 already bought, the first pick comes from cluster 2.
    first = k_center_greedy(pool, centres[:2], 1)[0]
    assert int(first) // 20 == 2
    assert len(set(k_center_greedy(pool, centres, 30).tolist())) == 30


def test_an_unknown_strategy_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown selection strategy"):
        choose("best", _scores([[0.0, 1.0]]), 1, np.random.default_rng(0))


@pytest.mark.parametrize(("budget", "rounds"), [(48, 3), (10, 3), (5, 8), (10000, 8)])
def test_round_sizes_spend_the_budget_exactly(budget: int, rounds: int) -> None:
    sizes = round_sizes(budget, rounds)
    assert sum(sizes) == budget and min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


def test_bandit_moves_toward_the_arm_whose_clips_earn_more() -> None:
    rng = np.random.default_rng(0)
    bandit = SourceBandit(3, step=0.5, rng=rng)
    assert np.allclose(bandit.policy(), 1 / 3)
    for _ in range(10):
        arms = bandit.draw(200)
        rewards = np.where(arms == 2, 2.0, 0.5) + 0.1 * rng.standard_normal(200)
        bandit.update(arms, rewards)
    policy = bandit.policy()
    assert policy[2] > 0.8 and policy.sum() == pytest.approx(1.0)


def test_balanced_fills_the_classes_answered_least_with_the_surest_candidates() -> None:
    # Pool: rows 0-3 look like class 0, rows 4-5 like class 1, row 6 like class 2.
    logits = [[5, 0, 0], [3, 0, 0], [9, 0, 0], [1, 0, 0], [0, 4, 0], [0, 8, 0], [0, 0, 2]]
    bought = np.array([10, 2, 3])  # the victim has answered class 0 most
    chosen = choose("balanced", _scores(logits), 3, np.random.default_rng(0), bought_classes=bought)
    # class 1 (2 answers) -> its surest row 5; then classes 1 and 2 tie at 3 -> class 1 again
    # (row 4); then class 2 (3) -> row 6.
    assert chosen.tolist() == [5, 4, 6]
    # With more picks than class 1 and 2 candidates, class 0 follows, surest first.
    chosen = choose("balanced", _scores(logits), 5, np.random.default_rng(0), bought_classes=bought)
    assert chosen.tolist() == [5, 4, 6, 2, 0]


def test_a_pool_given_as_a_list_of_clips_scores_as_the_stacked_batch() -> None:
    """Pools are scored a batch at a time from the list of candidates (no whole-pool copy);
    the scores must be those of the stacked array, in pool order, across batch boundaries."""
    import torch

    from attacker.active import score_pool
    from attacker.students import StudentPreprocessing, create_student

    torch.manual_seed(0)
    student = create_student(
        "tiny3d",
        num_classes=5,
        preprocessing=StudentPreprocessing(frames=4, height=16, width=16),
    )
    clips = np.random.default_rng(1).integers(0, 256, (7, 4, 16, 16, 3), dtype=np.uint8)
    stacked = score_pool(student, clips, precision="fp32", batch_size=3)
    listed = score_pool(student, list(clips), precision="fp32", batch_size=3)
    np.testing.assert_array_equal(listed.logits, stacked.logits)
    np.testing.assert_array_equal(listed.features, stacked.features)
    assert listed.logits.shape == (7, 5) and len(listed.features) == 7
    # Each candidate's scores do not depend on the batch it was scored in.
    alone = score_pool(student, list(clips[5:6]), precision="fp32")
    np.testing.assert_allclose(alone.logits[0], stacked.logits[5], rtol=1e-4, atol=1e-5)
