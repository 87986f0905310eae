"""Build a query source from its config, and re-create any emitted clip from its recipe."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any, Final

import numpy as np

from attacker.sources._base import (
    ClipShape,
    QuerySource,
    SourceError,
    check_recipe_shape,
    derive_seed,
)
from attacker.sources.affine import StackedAffineSource, render_affine
from attacker.sources.config import (
    MixConfig,
    NoiseConfig,
    NpzConfig,
    SourceConfig,
    StackedAffineConfig,
    SynthActionsConfig,
    VideoFolderConfig,
    parse_source_config,
)
from attacker.sources.mix import MixSource
from attacker.sources.noise import NoiseSource, render_noise
from attacker.sources.npz import NpzSource, read_npz_clip
from attacker.sources.synth import SynthActionsSource, render_synthactions
from attacker.sources.videos import VideoFolderSource, read_video_clip

__all__ = ["build_source", "recreate_clip"]

_MIX_STREAM: Final = 41
_CONFIG_TYPES: Final = (
    NoiseConfig,
    StackedAffineConfig,
    VideoFolderConfig,
    SynthActionsConfig,
    NpzConfig,
    MixConfig,
)


def build_source(
    config: SourceConfig | Mapping[str, Any], *, shape: ClipShape, seed: int
) -> QuerySource:
    """The query source a config describes, producing clips at ``shape``.

    ``config`` may be a mapping (validated here, one-line :class:`SourceConfigError` on
    failure). ``seed`` (non-negative) makes the stream deterministic; a mix gives each part its
    own seed derived from it. Errors in the data (missing folder, no videos or images, a bad
    .npz) raise :class:`SourceError` here, before any clip is made.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise SourceError(f"seed must be a non-negative int, got {seed!r}")
    if not isinstance(config, _CONFIG_TYPES):
        config = parse_source_config(config)
    if isinstance(config, NoiseConfig):
        return NoiseSource(config, shape=shape, seed=seed)
    if isinstance(config, StackedAffineConfig):
        return StackedAffineSource(config, shape=shape, seed=seed)
    if isinstance(config, VideoFolderConfig):
        return VideoFolderSource(config, shape=shape, seed=seed)
    if isinstance(config, SynthActionsConfig):
        return SynthActionsSource(config, shape=shape, seed=seed)
    if isinstance(config, NpzConfig):
        return NpzSource(config, shape=shape, seed=seed)
    kinds = Counter(part.source.kind for part in config.parts)
    parts: list[tuple[str, QuerySource, float]] = []
    for i, part in enumerate(config.parts):
        name = part.name
        if name is None:
            name = part.source.kind if kinds[part.source.kind] == 1 else f"{part.source.kind}_{i}"
        source = build_source(part.source, shape=shape, seed=derive_seed(seed, _MIX_STREAM, i))
        parts.append((name, source, part.weight))
    return MixSource(parts, on_exhausted=config.on_exhausted)


def recreate_clip(recipe: Mapping[str, Any], *, shape: ClipShape) -> np.ndarray:
    """Rebuild the clip a recipe came with, exactly (uint8, C-contiguous, ``shape``).

    Works for every source kind; ``video_folder`` and ``npz`` read their file again, so they
    fail (:class:`SourceError`) if it has gone. A recipe made at another clip shape is refused.
    """
    recipe = dict(recipe)
    kind = recipe.get("source")
    if kind == "mix":
        inner = recipe.get("recipe")
        if not isinstance(inner, Mapping):
            raise SourceError("mix recipe has no part recipe under 'recipe'")
        return recreate_clip(inner, shape=shape)
    check_recipe_shape(recipe, shape)
    try:
        if kind == "noise":
            return render_noise(recipe, shape)
        if kind == "stacked_affine":
            return render_affine(recipe, shape)
        if kind == "synthactions":
            return render_synthactions(recipe, shape)
        if kind == "npz":
            return read_npz_clip(recipe, shape)
        if kind == "video_folder":
            return read_video_clip(recipe, shape)
    except KeyError as exc:
        raise SourceError(f"{kind} recipe is missing {exc}") from None
    known = ["mix", "noise", "npz", "stacked_affine", "synthactions", "video_folder"]
    raise SourceError(f"cannot re-create a clip from a recipe of source {kind!r}; known: {known}")
