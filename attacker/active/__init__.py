"""Active query selection: draw a candidate pool locally (free), score it with the current
student, pay only for the chosen clips, in rounds, retraining between rounds."""

from attacker.active.bandit import SourceBandit
from attacker.active.config import SelectConfig, round_sizes
from attacker.active.scoring import PoolScores, score_pool
from attacker.active.strategies import choose

__all__ = ["PoolScores", "SelectConfig", "SourceBandit", "choose", "round_sizes", "score_pool"]
