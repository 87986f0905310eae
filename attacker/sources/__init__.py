"""Where query clips come from: noise, stacked-affine images, video folders, the victim's own
(labelled) distribution, .npz files, and weighted mixes of these.

``build_source(config, shape=..., seed=...)`` gives an iterable of :class:`QueryClip` (clip,
JSON recipe, optional true label), deterministic for a config and seed and streamed one clip at
a time; ``recreate_clip(recipe, shape=...)`` rebuilds any emitted clip exactly from its recipe.
"""

from attacker.sources._base import ClipShape, QueryClip, QuerySource, SourceError
from attacker.sources.build import build_source, recreate_clip
from attacker.sources.config import (
    MixConfig,
    MixPart,
    NoiseConfig,
    NpzConfig,
    SourceConfig,
    SourceConfigError,
    StackedAffineConfig,
    SynthActionsConfig,
    VideoFolderConfig,
    parse_source_config,
)

__all__ = [
    "ClipShape",
    "MixConfig",
    "MixPart",
    "NoiseConfig",
    "NpzConfig",
    "QueryClip",
    "QuerySource",
    "SourceConfig",
    "SourceConfigError",
    "SourceError",
    "StackedAffineConfig",
    "SynthActionsConfig",
    "VideoFolderConfig",
    "build_source",
    "parse_source_config",
    "recreate_clip",
]
