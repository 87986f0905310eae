"""The source registry: one registration makes a source buildable, parseable and re-creatable."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any, Literal, get_args

import numpy as np
import pytest
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from attacker.sources import (
    ClipShape,
    QueryClip,
    SourceConfig,
    SourceConfigBase,
    SourceConfigError,
    SourceEntry,
    SourceError,
    build_source,
    get_source_entry,
    list_sources,
    parse_source_config,
    recreate_clip,
    register_source,
)
from attacker.sources.registry import source_config_types, unregister_source

SHAPE = ClipShape(frames=4, height=8, width=8)
BUILTIN = ["mix", "noise", "npz", "stacked_affine", "synthactions", "video_folder"]


class ToyConfig(SourceConfigBase):
    """Flat clips, one grey level per clip (a test source)."""

    kind: Literal["toy"] = "toy"
    level: int = Field(100, ge=0, le=200)


def render_toy(recipe: dict[str, Any], shape: ClipShape) -> np.ndarray:
    level = int(recipe["level"]) + (int(recipe["seed"]) + int(recipe["index"])) % 50
    return np.full(shape.array_shape, level, dtype=np.uint8)


class ToySource:
    def __init__(self, config: ToyConfig, *, shape: ClipShape, seed: int) -> None:
        self.name = "toy"
        self.config = config
        self.shape = shape
        self.seed = seed

    def __iter__(self) -> Iterator[QueryClip]:
        for index in itertools.count():
            recipe = {"source": "toy", "seed": self.seed, "index": index}
            recipe |= {"level": self.config.level, "shape": self.shape.as_list()}
            yield QueryClip(clip=render_toy(recipe, self.shape), recipe=recipe)


@pytest.fixture
def toy() -> Iterator[SourceEntry]:
    """The toy source, registered for one test and removed afterwards."""
    register_source("toy", config=ToyConfig, render=render_toy)(ToySource)
    try:
        yield get_source_entry("toy")
    finally:
        unregister_source("toy")


def test_builtin_sources_are_registered_and_make_the_union() -> None:
    assert list_sources() == BUILTIN
    for kind in BUILTIN:
        entry = get_source_entry(kind)
        assert entry.kind == kind and entry.render is not None
        assert entry.config.model_fields["kind"].default == kind
    union, _ = get_args(SourceConfig)  # Annotated[Union[...], Field(discriminator="kind")]
    assert get_args(union) == source_config_types()


def test_a_registered_source_builds_parses_and_recreates(toy: SourceEntry) -> None:
    assert toy.builder is ToySource and toy.config is ToyConfig
    assert toy.description == "Flat clips, one grey level per clip (a test source)."
    assert "toy" in list_sources()
    source = build_source({"kind": "toy", "level": 20}, shape=SHAPE, seed=3)
    assert isinstance(source, ToySource)
    queries = list(itertools.islice(source, 4))
    assert [int(q.clip[0, 0, 0, 0]) for q in queries] == [23, 24, 25, 26]
    for query in queries:
        recipe = json.loads(json.dumps(query.recipe))  # as a transfer set stores it
        assert np.array_equal(recreate_clip(recipe, shape=SHAPE), query.clip)
    config = parse_source_config({"kind": "toy", "level": 7})
    assert config == ToyConfig(level=7)
    assert isinstance(build_source(config, shape=SHAPE, seed=0), ToySource)
    with pytest.raises(SourceConfigError, match=r"toy\.levle: Extra inputs are not permitted"):
        parse_source_config({"kind": "toy", "levle": 7})
    with pytest.raises(SourceError, match="made at clip shape 4x8x8"):
        recreate_clip(queries[0].recipe, shape=ClipShape(4, 8, 16))
    broken = {key: value for key, value in queries[0].recipe.items() if key != "level"}
    with pytest.raises(SourceError, match="toy recipe is missing 'level'"):
        recreate_clip(broken, shape=SHAPE)


def test_an_unregistered_source_is_gone_and_the_others_stay() -> None:
    register_source("toy", config=ToyConfig, render=render_toy)(ToySource)
    recipe = next(iter(build_source({"kind": "toy"}, shape=SHAPE, seed=0))).recipe
    assert unregister_source("toy").builder is ToySource
    assert list_sources() == BUILTIN
    with pytest.raises(SourceConfigError, match="'toy'"):
        build_source({"kind": "toy"}, shape=SHAPE, seed=0)
    with pytest.raises(SourceError, match="'toy'"):
        recreate_clip(recipe, shape=SHAPE)
    with pytest.raises(SourceError, match="unknown source kind 'toy'"):
        unregister_source("toy")
    assert isinstance(parse_source_config({"kind": "noise"}), SourceConfigBase)


def test_registering_a_kind_twice_is_an_error(toy: SourceEntry) -> None:
    with pytest.raises(ValueError, match="'toy' is already registered"):
        register_source("toy", config=ToyConfig, render=None)(ToySource)
    noise = get_source_entry("noise")
    with pytest.raises(ValueError, match="'noise' is already registered"):
        register_source("noise", config=noise.config, render=noise.render)(noise.builder)
    assert get_source_entry("toy") is toy and get_source_entry("noise") is noise


def test_the_config_must_carry_the_kind_tag() -> None:
    with pytest.raises(ValueError, match=r"kind: Literal\['flat'\] = 'flat'"):
        register_source("flat", config=ToyConfig, render=None)(ToySource)

    class Untagged(SourceConfigBase):
        kind: str = "untagged"

    with pytest.raises(ValueError, match="Untagged must declare"):
        register_source("untagged", config=Untagged, render=None)(ToySource)

    class NotAConfig(BaseModel):
        kind: Literal["plain"] = "plain"

    with pytest.raises(TypeError, match="SourceConfigBase"):
        register_source("plain", config=NotAConfig, render=None)(ToySource)  # type: ignore[arg-type]
    assert list_sources() == BUILTIN


def test_unknown_kinds_give_one_line_naming_the_known_ones() -> None:
    with pytest.raises(SourceError) as error:
        get_source_entry("gan")
    message = str(error.value)
    assert "\n" not in message and message.startswith("unknown source kind 'gan'; known: ")
    assert all(kind in message for kind in BUILTIN)

    class Stray(SourceConfigBase):
        kind: Literal["stray"] = "stray"

    with pytest.raises(SourceError, match="unknown source kind 'stray'"):
        build_source(Stray(), shape=SHAPE, seed=0)
    with pytest.raises(SourceError, match=r"recipe of source 'gan'; known: mix, noise"):
        recreate_clip({"source": "gan"}, shape=SHAPE)


def test_a_source_without_a_renderer_builds_but_cannot_recreate() -> None:
    register_source("toy", config=ToyConfig, render=None)(ToySource)
    try:
        query = next(iter(build_source({"kind": "toy"}, shape=SHAPE, seed=0)))
        with pytest.raises(SourceError, match="'toy' cannot re-create its clips"):
            recreate_clip(query.recipe, shape=SHAPE)
    finally:
        unregister_source("toy")


def test_the_union_validates_a_mix_once() -> None:
    """Resolving ``MixPart.source`` after every source registered must not wrap the mix's own
    validator twice (pydantic does, when ``MixConfig`` is rebuilt before ``MixPart``)."""
    adapter: TypeAdapter[SourceConfig] = TypeAdapter(SourceConfig)
    with pytest.raises(ValidationError) as error:
        adapter.validate_python({"kind": "gan"})
    assert str(error.value).count("_names_unique") < 2  # the union's title names each validator
    expected = "'noise', 'stacked_affine', 'video_folder', 'synthactions', 'npz', 'mix'"
    assert f"expected tags: {expected}" in str(error.value)
