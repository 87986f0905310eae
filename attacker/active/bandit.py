"""A gradient bandit over the parts of a ``mix`` source (KnockoffNets' adaptive sampling, with
the parts as arms): preferences ``H``, policy ``softmax(H)``; after a round, each part's
preference moves by the standardised reward its clips earned, against the running baseline."""

from __future__ import annotations

import numpy as np


class SourceBandit:
    def __init__(self, arms: int, *, step: float, rng: np.random.Generator) -> None:
        if arms < 1:
            raise ValueError("a bandit needs at least one arm")
        self.preferences = np.zeros(arms)
        self.step = step
        self.rng = rng
        self.baseline: float | None = None
        self.history: list[dict[str, object]] = []

    def policy(self) -> np.ndarray:
        shifted = np.exp(self.preferences - self.preferences.max())
        probs: np.ndarray = shifted / shifted.sum()
        return probs

    def draw(self, k: int) -> np.ndarray:
        """The arm of each of the next ``k`` clips."""
        return self.rng.choice(len(self.preferences), size=k, p=self.policy())

    def update(self, arms: np.ndarray, rewards: np.ndarray) -> None:
        """One gradient-bandit step on a round's (arm, reward) pairs."""
        if len(rewards) == 0:
            return
        mean = float(rewards.mean())
        baseline = mean if self.baseline is None else self.baseline
        scale = float(rewards.std()) or 1.0
        advantage = (rewards - baseline) / scale
        policy = self.policy()
        onehot = np.eye(len(self.preferences))[arms]
        gradient = (advantage[:, None] * (onehot - policy[None, :])).mean(axis=0)
        self.preferences += self.step * len(self.preferences) * gradient
        self.baseline = mean if self.baseline is None else 0.5 * (self.baseline + mean)
        self.history.append(
            {
                "policy_before": [round(float(p), 4) for p in policy],
                "mean_reward_per_arm": [
                    round(float(rewards[arms == a].mean()), 4) if (arms == a).any() else None
                    for a in range(len(self.preferences))
                ],
            }
        )
