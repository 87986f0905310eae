"""Stealth mode: watch our own query stream the way PRADA would, and shape it to stay normal.

The attacker runs the same public statistic as the victim (``shared.detection``: the naturalness
embedding, calibrated on natural clips the attacker holds, and PRADA on the victim's answered
labels) over what it has already sent. Two levers keep the local W above ``target_w``:

* mixing: a share of the queries comes from a natural source (labelled clips or real videos),
  raised when W sinks towards the target and lowered again while it stays clear of it;
* spacing: an attack clip whose embedding lies within ``min_spacing`` of a recent attack query
  is skipped (near-duplicates are what PRADA looks for).

Mixing costs fidelity per query when the natural clips teach less than the attack clips; the
report states the natural share, the local W, and the queries spent before any alarm.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attacker.sources import QueryClip
from shared.detection import NaturalnessEmbedding, PradaConfig, PradaState, observe


@dataclass
class StealthStats:
    natural: int = 0
    attack: int = 0
    skipped: int = 0
    natural_fraction: float = 0.0
    w: float | None = None
    min_w: float | None = None
    w_history: list[tuple[int, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "natural": self.natural,
            "attack": self.attack,
            "skipped_near_duplicates": self.skipped,
            "natural_fraction": round(self.natural_fraction, 3),
            "local_w": self.w,
            "local_min_w": self.min_w,
            "w_history": self.w_history[-200:],
        }


class StealthShaper:
    def __init__(
        self,
        attack: Iterator[QueryClip],
        natural: Iterator[QueryClip],
        embedding: NaturalnessEmbedding,
        *,
        target_w: float,
        start_fraction: float = 0.5,
        min_fraction: float = 0.0,
        max_fraction: float = 1.0,
        step_up: float = 0.1,
        step_down: float = 0.02,
        min_spacing: float = 0.05,
        recent: int = 256,
    ) -> None:
        self._attack = attack
        self._natural = natural
        self.embedding = embedding
        self.target_w = target_w
        self.min_fraction, self.max_fraction = min_fraction, max_fraction
        self.step_up, self.step_down = step_up, step_down
        self.min_spacing = min_spacing
        self.state = PradaState(dim=embedding.dim)
        self.config = PradaConfig(delta=target_w)
        self.stats = StealthStats(natural_fraction=start_fraction)
        self._recent: deque[np.ndarray] = deque(maxlen=recent)
        self._credit = 0.0  # stride scheduling of natural vs attack clips

    def __iter__(self) -> Iterator[QueryClip]:
        while True:
            self._credit += self.stats.natural_fraction
            if self._credit >= 1.0:
                self._credit -= 1.0
                query = next(self._natural, None)
                if query is None:
                    return
                self.stats.natural += 1
                yield _tagged(query, "natural")
                continue
            query, exhausted = self._next_spaced_attack()
            if exhausted:
                return
            if query is None:  # only near-duplicates on offer: send a natural clip instead
                query = next(self._natural, None)
                if query is None:
                    return
                self.stats.natural += 1
                yield _tagged(query, "natural")
                continue
            self.stats.attack += 1
            yield _tagged(query, "attack")

    def _next_spaced_attack(self, tries: int = 16) -> tuple[QueryClip | None, bool]:
        """(an attack clip spaced from recent ones, or None after ``tries`` near-duplicates;
        whether the attack source ran out)."""
        for _ in range(tries):
            query = next(self._attack, None)
            if query is None:
                return None, True
            vector = self.embedding(query.clip[None])[0]
            if self._recent:
                nearest = float(np.min(np.linalg.norm(np.stack(self._recent) - vector, axis=1)))
                if nearest < self.min_spacing:
                    self.stats.skipped += 1
                    continue
            self._recent.append(vector)
            return query, False
        return None, False

    def observe(self, queries: list[QueryClip], answers: list[dict[str, Any]]) -> None:
        """Feed answered queries (in order) through the local PRADA and steer the mix."""
        if not queries:
            return
        vectors = self.embedding(np.stack([q.clip for q in queries]))
        for vector, answer in zip(vectors, answers, strict=True):
            outcome = observe(self.state, self.config, vector, int(answer["index"]))
            if outcome.tested and outcome.w is not None:
                self.stats.w = outcome.w
                self.stats.min_w = (
                    outcome.w if self.stats.min_w is None else min(self.stats.min_w, outcome.w)
                )
                self.stats.w_history.append((self.state.queries, round(outcome.w, 4)))
                self._steer(outcome.w)

    def _steer(self, w: float) -> None:
        fraction = self.stats.natural_fraction
        if w < self.target_w:
            fraction += self.step_up
        else:
            fraction -= self.step_down
        self.stats.natural_fraction = min(self.max_fraction, max(self.min_fraction, fraction))


def _tagged(query: QueryClip, part: str) -> QueryClip:
    recipe = {"source": "stealth", "part": part, "recipe": query.recipe}
    return QueryClip(clip=query.clip, recipe=recipe, true_label=query.true_label)
