"""Source registry: query sources filed by ``kind``, as timm's ``register_model`` files models.

A source is registered once, on its class (or a builder function), with the pydantic config that
validates its YAML section and the function that re-creates a clip from one of its recipes::

    @register_source("noise", config=NoiseConfig, render=render_noise)
    class NoiseSource: ...

This table is the only list of source kinds: :func:`~attacker.sources.build_source`,
:func:`~attacker.sources.recreate_clip`, :func:`~attacker.sources.parse_source_config` and the
:data:`~attacker.sources.SourceConfig` union all read it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, TypeVar, get_args, get_origin

import numpy as np

from attacker.sources._base import ClipShape, QuerySource, SourceConfigBase, SourceError

__all__ = [
    "RecipeFactors",
    "RecipeRenderer",
    "SourceBuilder",
    "SourceEntry",
    "get_source_entry",
    "list_sources",
    "register_source",
    "source_config_types",
    "unregister_source",
]

#: Modules of the built-in sources, imported (so registered) on first use of the registry. This
#: order is the order of the ``SourceConfig`` union, hence of the tags a validation error lists.
_BUILTIN_MODULES: Final = ("noise", "affine", "videos", "synth", "npz", "mix")


class SourceBuilder(Protocol):
    """``builder(config, *, shape, seed) -> QuerySource``: a source class, or a function."""

    def __call__(self, config: Any, /, *, shape: ClipShape, seed: int) -> QuerySource: ...


RecipeRenderer = Callable[[dict[str, Any], ClipShape], np.ndarray]
"""``render(recipe, shape) -> clip``: rebuilds an emitted clip exactly from its recipe. A missing
recipe field may raise ``KeyError`` (reported as ``"<kind> recipe is missing '<field>'"``)."""


@dataclass(frozen=True)
class RecipeFactors:
    """What a source's recipes say about how its clips move, as categorical factors (the
    targets of ``train.pretext``, which pre-trains a student to read them off the clips).

    ``classes(config)`` names every factor the source's clips may have and its number of values;
    ``of(recipe)`` gives the value of each factor that applies to that clip (one that does not
    apply, such as a sprite's path on a clip without sprites, is left out).
    """

    classes: Callable[[Any], dict[str, int]]
    of: Callable[[dict[str, Any]], dict[str, int]]


@dataclass(frozen=True)
class SourceEntry:
    """One registered source: its YAML tag, config model, builder, recipe re-creator and, where
    its recipes describe the motion, the factors they name."""

    kind: str
    config: type[SourceConfigBase]
    builder: SourceBuilder
    # None: the source's clips cannot be re-created from recipes (recreate_clip refuses them).
    render: RecipeRenderer | None
    # None: the source's recipes name no motion factors (train.pretext refuses the source).
    factors: RecipeFactors | None = None

    @property
    def description(self) -> str:
        return (self.config.__doc__ or "").strip().split("\n")[0]


_REGISTRY: dict[str, SourceEntry] = {}
_BUILTINS_LOADED = False

B = TypeVar("B", bound=SourceBuilder)


def register_source(
    kind: str,
    *,
    config: type[SourceConfigBase],
    render: RecipeRenderer | None,
    factors: RecipeFactors | None = None,
) -> Callable[[B], B]:
    """Decorator that files a source class (or builder) under ``kind``.

    ``config`` must declare ``kind: Literal[kind] = kind``. Registering a kind twice is a bug.
    """

    def decorate(builder: B) -> B:
        _check_config(kind, config)
        if kind in _REGISTRY:
            raise ValueError(f"source kind {kind!r} is already registered")
        _REGISTRY[kind] = SourceEntry(
            kind=kind, config=config, builder=builder, render=render, factors=factors
        )
        return builder

    return decorate


def unregister_source(kind: str) -> SourceEntry:
    """Remove ``kind`` from the registry (for tests and plugins); returns its entry."""
    _import_builtin_sources()
    try:
        return _REGISTRY.pop(kind)
    except KeyError:
        raise SourceError(_unknown(kind)) from None


def get_source_entry(kind: str) -> SourceEntry:
    """The entry of ``kind``; a one-line :class:`SourceError` naming the known kinds if none."""
    _import_builtin_sources()
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise SourceError(_unknown(kind)) from None


def list_sources() -> list[str]:
    """Every registered kind, sorted."""
    _import_builtin_sources()
    return sorted(_REGISTRY)


def source_config_types() -> tuple[type[SourceConfigBase], ...]:
    """The config model of every registered kind: the built-ins in ``_BUILTIN_MODULES`` order
    (whatever order they were imported in), then the others in registration order."""
    _import_builtin_sources()
    ranked = sorted(enumerate(_REGISTRY.values()), key=lambda item: (_rank(item[1]), item[0]))
    return tuple(entry.config for _, entry in ranked)


def _rank(entry: SourceEntry) -> int:
    module = getattr(entry.builder, "__module__", "")
    names = [f"{__package__}.{name}" for name in _BUILTIN_MODULES]
    return names.index(module) if module in names else len(names)


def _unknown(kind: object) -> str:
    return f"unknown source kind {kind!r}; known: {', '.join(sorted(_REGISTRY))}"


def _check_config(kind: str, config: type[SourceConfigBase]) -> None:
    if not isinstance(config, type) or not issubclass(config, SourceConfigBase):
        raise TypeError(f"source {kind!r}: config must subclass SourceConfigBase, got {config!r}")
    field = config.model_fields.get("kind")
    tag, default = (None, None) if field is None else (field.annotation, field.default)
    if get_origin(tag) is not Literal or get_args(tag) != (kind,) or default != kind:
        raise ValueError(
            f"source {kind!r}: {config.__name__} must declare "
            f"kind: Literal[{kind!r}] = {kind!r} (the tag YAML uses to pick it)"
        )


def _import_builtin_sources() -> None:
    # Importing a source module runs its @register_source decorator.
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True  # before importing: a source module may consult the registry
    try:
        for name in _BUILTIN_MODULES:
            importlib.import_module(f"{__package__}.{name}")
    except BaseException:
        _BUILTINS_LOADED = False
        raise
