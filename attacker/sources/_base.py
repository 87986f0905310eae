"""The value types every query source shares: clip shape, emitted clip, source protocol, errors."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict

__all__ = [
    "RECIPE_VERSION",
    "ClipShape",
    "QueryClip",
    "QuerySource",
    "SourceConfigBase",
    "SourceError",
    "SourceModel",
    "check_recipe_shape",
    "clip_rng",
    "derive_seed",
    "finish_clip",
    "incomplete_source_models",
    "to_uint8",
]

#: Bumped when a recipe's meaning changes, so old transfer sets are not silently mis-read.
RECIPE_VERSION: Final = 1


class SourceError(ValueError):
    """A query source cannot be built, read, or asked to re-create a clip."""


class SourceModel(BaseModel):
    """Base of every pydantic model in a source config: frozen, and unknown fields are errors (a
    typo fails at load time)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if not cls.__pydantic_complete__:  # it names a type defined later (``SourceConfig``)
            _INCOMPLETE_MODELS.append(cls)


#: Source models whose fields name a type not yet defined, in the order they were defined (the
#: order to rebuild them in: a mix's ``MixPart`` before the ``MixConfig`` that holds it).
_INCOMPLETE_MODELS: list[type[SourceModel]] = []


def incomplete_source_models() -> list[type[SourceModel]]:
    """The source models still waiting for a forward reference, oldest first."""
    return [model for model in _INCOMPLETE_MODELS if not model.__pydantic_complete__]


class SourceConfigBase(SourceModel):
    """Base of a source's config. A subclass declares ``kind: Literal["<kind>"] = "<kind>"``:
    the tag that picks it in YAML (``source: {kind: noise, ...}``) and in the registry."""

    kind: str


class _HasClipShape(Protocol):
    @property
    def frames(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def width(self) -> int: ...


@dataclass(frozen=True)
class ClipShape:
    """The clip shape a victim takes (its input spec): ``frames`` x ``height`` x ``width``."""

    frames: int
    height: int
    width: int

    def __post_init__(self) -> None:
        for name in ("frames", "height", "width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ClipShape.{name} must be a positive int, got {value!r}")

    @classmethod
    def of(cls, spec: _HasClipShape) -> ClipShape:
        """The shape of anything with ``frames``/``height``/``width`` (e.g. ``InputSpecWire``)."""
        return cls(frames=int(spec.frames), height=int(spec.height), width=int(spec.width))

    @property
    def array_shape(self) -> tuple[int, int, int, int]:
        """``(T, H, W, 3)``: the numpy shape of one clip."""
        return (self.frames, self.height, self.width, 3)

    def as_list(self) -> list[int]:
        """``[T, H, W]``, as recipes record it."""
        return [self.frames, self.height, self.width]

    def __str__(self) -> str:
        return f"{self.frames}x{self.height}x{self.width}"


@dataclass(frozen=True, eq=False)
class QueryClip:
    """One clip a source offers for querying.

    ``clip`` is uint8 ``(T, H, W, 3)``, C-contiguous, at the requested :class:`ClipShape`.
    ``recipe`` is JSON-serialisable and enough for :func:`~attacker.sources.recreate_clip` to
    rebuild ``clip`` exactly. ``true_label`` is set only by labelled sources (the victim's own
    label space); it is never a class-folder name. ``clip_hash`` is the clip's content hash
    (:func:`shared.hashing.clip_hash`) when the source already knows it, as a replayed transfer
    set does; None means it is computed when needed.
    """

    clip: np.ndarray
    recipe: dict[str, Any]
    true_label: int | None = None
    clip_hash: str | None = None


@runtime_checkable
class QuerySource(Protocol):
    """An iterable of :class:`QueryClip`, deterministic for a given config and seed.

    Iteration may be infinite and is streamed: a source never holds its whole pool in memory.
    Each call to ``iter()`` starts again from the first clip.
    """

    name: str

    def __iter__(self) -> Iterator[QueryClip]: ...


def clip_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """The random generator of clip ``index``: independent of every other clip and purpose."""
    return np.random.default_rng([seed, stream, index])


def derive_seed(seed: int, stream: int, index: int) -> int:
    """A child seed (uint32) for part ``index`` of a composite source."""
    return int(np.random.SeedSequence([seed, stream, index]).generate_state(1)[0])


def check_recipe_shape(recipe: dict[str, Any], shape: ClipShape) -> None:
    """Refuse to re-create a clip at a shape other than the one its recipe was made at."""
    recorded = recipe.get("shape")
    if recorded is not None and list(recorded) != shape.as_list():
        made = "x".join(str(d) for d in recorded)
        raise SourceError(
            f"recipe of a {recipe.get('source')!r} clip was made at clip shape {made}, not {shape}"
        )


def finish_clip(clip: np.ndarray, shape: ClipShape) -> np.ndarray:
    """Check a rendered clip and make it uint8 C-contiguous."""
    out = np.ascontiguousarray(clip, dtype=np.uint8)
    if out.shape != shape.array_shape:  # a bug in a source, not a user error
        raise AssertionError(f"source produced {out.shape}, expected {shape.array_shape}")
    return out


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Round float pixel values to uint8, saturating at 0 and 255."""
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)
