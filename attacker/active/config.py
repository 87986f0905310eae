"""``query.select``: which strategy picks the paid clips, from how large a pool, in how many
rounds."""

from __future__ import annotations

import itertools
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Strategy = Literal["random", "entropy", "margin", "coreset", "balanced", "bandit"]


class SelectConfig(BaseModel):
    """``random`` is the control (a random subset of the pool: the plain stream, statistically).
    ``entropy`` / ``margin`` pay for the clips the student is least sure of; ``coreset`` for the
    clips farthest (k-center greedy) from everything bought so far in the student's feature
    space; ``balanced`` for the clips that even out the classes the victim has answered so far
    (by the student's guess of each candidate's class); ``bandit`` (KnockoffNets-style) learns
    which part of a ``mix`` source to draw from, rewarded by the student's loss on the answers
    each part brought.

    On a ``mix`` source the pool strategies keep the mix's weights: each part's share of a
    round comes from the mix's schedule and the strategy picks within each part (drawing
    ``pool_factor`` candidates of that part per clip bought), so a 5% labelled part stays 5% of
    what is paid for, whichever clips the student prefers."""

    model_config = ConfigDict(extra="forbid")

    strategy: Strategy = "balanced"  # the best measured (README, "Active query selection")
    # Candidates drawn (locally, unpaid) per clip paid for; the bandit draws exactly what it pays.
    pool_factor: Annotated[int, Field(ge=1, le=64)] = 8
    # The budget is spent in this many equal rounds; the student is trained after each one (the
    # run's budget points are the round ends).
    rounds: Annotated[int, Field(ge=1, le=1000)] = 10
    # coreset: at most this many already-bought clips (the latest) act as the initial centres.
    coreset_centres: Annotated[int, Field(ge=1)] = 4096
    # bandit: step size of the preference update (rewards are standardised per round).
    bandit_step: Annotated[float, Field(gt=0)] = 0.5


def round_sizes(budget: int, rounds: int) -> list[int]:
    """Clips paid per round: ``budget`` split into ``rounds`` near-equal parts (none empty)."""
    rounds = min(rounds, budget)
    edges = [round(budget * r / rounds) for r in range(rounds + 1)]
    return [b - a for a, b in itertools.pairwise(edges)]
