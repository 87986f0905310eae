"""Where query clips come from: noise, stacked-affine images, video folders, the victim's own
(labelled) distribution, .npz files, and weighted mixes of these.

``build_source(config, shape=..., seed=...)`` gives an iterable of :class:`QueryClip` (clip,
JSON recipe, optional true label), deterministic for a config and seed and streamed one clip at
a time; ``recreate_clip(recipe, shape=...)`` rebuilds any emitted clip exactly from its recipe.
Both find the source by its ``kind`` in the registry (:func:`list_sources`).

Adding a query source
---------------------
One new module in this package holds the source's config (a :class:`SourceConfigBase` with a
``kind`` tag, validated from YAML), a ``render(recipe, shape)`` that re-creates a clip from its
recipe (or ``render=None``), and the source class, filed with one ``@register_source``; then add
the module's name to ``_BUILTIN_MODULES`` in ``registry.py`` so it is imported (and its config
joins :data:`SourceConfig`) with the others::

    class FlatConfig(SourceConfigBase):
        kind: Literal["flat"] = "flat"
        level: int = Field(128, ge=0, le=254)

    def render_flat(recipe: dict[str, Any], shape: ClipShape) -> np.ndarray:
        return np.full(shape.array_shape, recipe["level"] + recipe["index"] % 2, np.uint8)

    @register_source("flat", config=FlatConfig, render=render_flat)
    class FlatSource:
        def __init__(self, config: FlatConfig, *, shape: ClipShape, seed: int) -> None: ...
        def __iter__(self) -> Iterator[QueryClip]: ...  # recipes {"source": "flat", ...}

A recipe's ``"source"`` is its kind, and its format is frozen once transfer sets hold it (bump
``RECIPE_VERSION`` if its meaning must change). A source registered after this package is
imported (a test, a plugin) builds and re-creates through the same functions, and
:func:`parse_source_config` accepts it, but it is not in the already-built :data:`SourceConfig`
union (attack YAML, mix parts).
"""

from attacker.sources._base import (
    ClipShape,
    QueryClip,
    QuerySource,
    SourceConfigBase,
    SourceError,
)
from attacker.sources.affine import StackedAffineConfig
from attacker.sources.build import build_source, factor_classes, recipe_factors, recreate_clip
from attacker.sources.config import SourceConfig, SourceConfigError, parse_source_config
from attacker.sources.mix import MixConfig, MixPart
from attacker.sources.noise import NoiseConfig
from attacker.sources.npz import NpzConfig
from attacker.sources.registry import (
    RecipeFactors,
    SourceEntry,
    get_source_entry,
    list_sources,
    register_source,
)
from attacker.sources.synth import SynthActionsConfig
from attacker.sources.videos import VideoFolderConfig

__all__ = [
    "ClipShape",
    "MixConfig",
    "MixPart",
    "NoiseConfig",
    "NpzConfig",
    "QueryClip",
    "QuerySource",
    "RecipeFactors",
    "SourceConfig",
    "SourceConfigBase",
    "SourceConfigError",
    "SourceEntry",
    "SourceError",
    "StackedAffineConfig",
    "SynthActionsConfig",
    "VideoFolderConfig",
    "build_source",
    "factor_classes",
    "get_source_entry",
    "list_sources",
    "parse_source_config",
    "recipe_factors",
    "recreate_clip",
    "register_source",
]
