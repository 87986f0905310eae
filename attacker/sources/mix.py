"""Several sources interleaved by weight on a fixed, smooth schedule.

Scheduling is "largest deficit first": before emitting clip ``n`` (1-based), part ``i`` is owed
``w_i * n - c_i`` clips, where ``w_i`` is its normalised weight and ``c_i`` what it has emitted;
the part owed most goes next (ties: the earlier part). Weights are exact fractions of the
configured floats, so the schedule is the same on every machine, and after any prefix of ``n``
clips each part has emitted ``w_i * n`` rounded up or down (e.g. exactly 5 of the first 100 for
a 5% part). Part ``i`` runs with its own seed derived from the run seed and ``i``.

A part's config is any :data:`~attacker.sources.SourceConfig`, a mix included; the union is
resolved in :mod:`attacker.sources.config` once every built-in source is registered.

Recipe: ``{"source": "mix", "part": i, "part_name": name, "recipe": <the part's recipe>}``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
from pydantic import Field, model_validator

from attacker.sources._base import (
    RECIPE_VERSION,
    ClipShape,
    QueryClip,
    QuerySource,
    SourceConfigBase,
    SourceError,
    SourceModel,
    derive_seed,
)
from attacker.sources.registry import RecipeFactors, register_source

if TYPE_CHECKING:
    from attacker.sources.config import SourceConfig

__all__ = ["MixConfig", "MixPart", "MixSource", "build_mix", "render_mix", "schedule"]

_MIX_STREAM: Final = 41


class MixPart(SourceModel):
    """One part of a mix: a source and its (relative, positive) weight."""

    source: SourceConfig
    weight: float = Field(gt=0.0)
    name: str | None = None


class MixConfig(SourceConfigBase):
    """Several sources interleaved by weight, on a fixed schedule (largest deficit first), so any
    prefix of the stream keeps the proportions to within one clip per part.

    When a finite part runs out, ``on_exhausted="stop"`` ends the mix and ``"continue"`` goes on
    with the other parts.
    """

    kind: Literal["mix"] = "mix"
    parts: tuple[MixPart, ...] = Field(min_length=1)
    on_exhausted: Literal["stop", "continue"] = "stop"

    @model_validator(mode="after")
    def _names_unique(self) -> MixConfig:
        names = [part.name for part in self.parts if part.name is not None]
        if len(names) != len(set(names)):
            raise ValueError(f"mix part names must be unique, got {names}")
        return self


def render_mix(recipe: dict[str, Any], shape: ClipShape) -> np.ndarray:
    """The clip of the part recipe a mix recipe wraps."""
    from attacker.sources.build import recreate_clip  # build -> config -> this module

    inner = recipe.get("recipe")
    if not isinstance(inner, Mapping):
        raise SourceError("mix recipe has no part recipe under 'recipe'")
    return recreate_clip(inner, shape=shape)


def mix_factor_classes(config: MixConfig) -> dict[str, int]:
    """The motion factors of every part whose recipes name some (a natural part names none)."""
    from attacker.sources.build import factor_classes  # build -> config -> this module

    classes: dict[str, int] = {}
    for part in config.parts:
        try:
            classes.update(factor_classes(part.source))
        except SourceError:
            continue
    return classes


def mix_recipe_factors(recipe: dict[str, Any]) -> dict[str, int]:
    """The motion factors of the part recipe a mix recipe wraps."""
    from attacker.sources.build import recipe_factors  # build -> config -> this module

    inner = recipe.get("recipe")
    return recipe_factors(inner) if isinstance(inner, Mapping) else {}


@register_source(
    "mix",
    config=MixConfig,
    render=render_mix,
    factors=RecipeFactors(classes=mix_factor_classes, of=mix_recipe_factors),
)
def build_mix(config: MixConfig, *, shape: ClipShape, seed: int) -> MixSource:
    """The mix a config describes; part ``i`` gets its own seed derived from ``seed`` and ``i``,
    and is named after its kind unless two parts share one (then ``<kind>_<i>``)."""
    from attacker.sources.build import build_source  # build -> config -> this module

    kinds = Counter(part.source.kind for part in config.parts)
    parts: list[tuple[str, QuerySource, float]] = []
    for i, part in enumerate(config.parts):
        name = part.name
        if name is None:
            name = part.source.kind if kinds[part.source.kind] == 1 else f"{part.source.kind}_{i}"
        source = build_source(part.source, shape=shape, seed=derive_seed(seed, _MIX_STREAM, i))
        parts.append((name, source, part.weight))
    return MixSource(parts, on_exhausted=config.on_exhausted)


class MixSource:
    """Interleaves ``parts`` (name, source, weight); see the module docstring."""

    def __init__(
        self,
        parts: Sequence[tuple[str, QuerySource, float]],
        *,
        on_exhausted: Literal["stop", "continue"] = "stop",
    ) -> None:
        if not parts:
            raise ValueError("a mix needs at least one part")
        if any(weight <= 0 for _, _, weight in parts):
            raise ValueError("mix weights must be positive")
        self.name = "mix"
        self.parts = list(parts)
        self.on_exhausted = on_exhausted
        total = sum(Fraction(weight) for _, _, weight in parts)
        self.weights = [Fraction(weight) / total for _, _, weight in parts]

    def __iter__(self) -> Iterator[QueryClip]:
        iterators = [iter(source) for _, source, _ in self.parts]
        counts = [0] * len(self.parts)
        active = [True] * len(self.parts)
        emitted = 0
        while any(active):
            part = _most_owed(self.weights, counts, active, emitted + 1)
            try:
                query = next(iterators[part])
            except StopIteration:
                if self.on_exhausted == "stop":
                    return
                active[part] = False
                continue
            counts[part] += 1
            emitted += 1
            yield self.part_clip(part, query)

    def next_parts(
        self, counts: Sequence[int], k: int, active: Sequence[bool] | None = None
    ) -> list[int]:
        """The part of each of the next ``k`` clips on the schedule, once part ``i`` has
        emitted ``counts[i]`` (parts not ``active``, e.g. run out, are skipped)."""
        emitted = list(counts)
        live = [True] * len(self.parts) if active is None else list(active)
        order = []
        for _ in range(k if any(live) else 0):
            part = _most_owed(self.weights, emitted, live, sum(emitted) + 1)
            emitted[part] += 1
            order.append(part)
        return order

    def part_clip(self, part: int, query: QueryClip) -> QueryClip:
        """``query``, emitted by part ``part``, as the mix emits it (its recipe wrapped)."""
        recipe = {
            "v": RECIPE_VERSION,
            "source": "mix",
            "part": part,
            "part_name": self.parts[part][0],
            "recipe": query.recipe,
        }
        return QueryClip(clip=query.clip, recipe=recipe, true_label=query.true_label)


def _most_owed(weights: list[Fraction], counts: list[int], active: list[bool], n: int) -> int:
    best, best_owed = -1, Fraction(0)
    for i, (weight, count) in enumerate(zip(weights, counts, strict=True)):
        owed = weight * n - count
        if active[i] and (best < 0 or owed > best_owed):
            best, best_owed = i, owed
    return best


def schedule(weights: Sequence[float], n: int) -> list[int]:
    """The part index of each of the first ``n`` clips for ``weights`` (no part runs out)."""
    total = sum(Fraction(w) for w in weights)
    fractions = [Fraction(w) / total for w in weights]
    counts = [0] * len(weights)
    active = [True] * len(weights)
    order = []
    for step in range(1, n + 1):
        part = _most_owed(fractions, counts, active, step)
        counts[part] += 1
        order.append(part)
    return order
