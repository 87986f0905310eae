"""Build a query source from its config, and re-create any emitted clip from its recipe.

Both look the source up in the registry (:mod:`attacker.sources.registry`) by its ``kind``: the
config's tag to build, the recipe's ``"source"`` field to re-create.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from attacker.sources._base import (
    ClipShape,
    QuerySource,
    SourceConfigBase,
    SourceError,
    check_recipe_shape,
)
from attacker.sources.config import parse_source_config
from attacker.sources.registry import get_source_entry, list_sources

__all__ = ["build_source", "factor_classes", "recipe_factors", "recreate_clip"]


def build_source(
    config: SourceConfigBase | Mapping[str, Any], *, shape: ClipShape, seed: int
) -> QuerySource:
    """The query source a config describes, producing clips at ``shape``.

    ``config`` may be a mapping (validated here, one-line :class:`SourceConfigError` on
    failure). ``seed`` (non-negative) makes the stream deterministic; a mix gives each part its
    own seed derived from it. Errors in the data (missing folder, no videos or images, a bad
    .npz) raise :class:`SourceError` here, before any clip is made.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise SourceError(f"seed must be a non-negative int, got {seed!r}")
    if not isinstance(config, SourceConfigBase):
        config = parse_source_config(config)
    entry = get_source_entry(config.kind)
    if not isinstance(config, entry.config):
        raise SourceError(
            f"a {type(config).__name__} is not the config of source {entry.kind!r} "
            f"({entry.config.__name__})"
        )
    return entry.builder(config, shape=shape, seed=seed)


def recreate_clip(recipe: Mapping[str, Any], *, shape: ClipShape) -> np.ndarray:
    """Rebuild the clip a recipe came with, exactly (uint8, C-contiguous, ``shape``).

    Works for every registered source that has a re-creator; ``video_folder`` and ``npz`` read
    their file again, so they fail (:class:`SourceError`) if it has gone. A recipe made at another
    clip shape is refused.
    """
    recipe = dict(recipe)
    kind = recipe.get("source")
    known = list_sources()
    if not isinstance(kind, str) or kind not in known:
        raise SourceError(
            f"cannot re-create a clip from a recipe of source {kind!r}; known: {', '.join(known)}"
        )
    render = get_source_entry(kind).render
    if render is None:
        raise SourceError(f"source {kind!r} cannot re-create its clips from recipes")
    check_recipe_shape(recipe, shape)
    try:
        return render(recipe, shape)
    except KeyError as exc:
        raise SourceError(f"{kind} recipe is missing {exc}") from None


def factor_classes(config: SourceConfigBase) -> dict[str, int]:
    """The motion factors (name -> number of values) the recipes of ``config``'s source name; a
    one-line :class:`SourceError` if its recipes name none (see ``RecipeFactors``)."""
    factors = get_source_entry(config.kind).factors
    classes = {} if factors is None else factors.classes(config)
    if not classes:
        with_factors = [
            k for k in list_sources() if k != config.kind and get_source_entry(k).factors
        ]
        raise SourceError(
            f"the recipes of source {config.kind!r} name no motion factors; sources whose "
            f"recipes do: {', '.join(with_factors)}"
        )
    return classes


def recipe_factors(recipe: Mapping[str, Any]) -> dict[str, int]:
    """The motion factors one recipe names ({} for a source whose recipes name none)."""
    kind = recipe.get("source")
    if not isinstance(kind, str) or kind not in list_sources():
        raise SourceError(f"no source {kind!r} to read motion factors from its recipe")
    factors = get_source_entry(kind).factors
    return {} if factors is None else factors.of(dict(recipe))
