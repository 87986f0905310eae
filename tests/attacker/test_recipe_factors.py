"""The motion factors a source's recipes name (``RecipeFactors``): what ``train.pretext``
pre-trains the student to read off unpaid clips."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from attacker.config import ConfigError, validate_config
from attacker.sources import (
    ClipShape,
    SourceError,
    build_source,
    factor_classes,
    parse_source_config,
    recipe_factors,
)
from attacker.sources.affine import AFFINE_FACTORS

SHAPE = ClipShape(8, 16, 16)
LAYERED = {"kind": "stacked_affine", "layered": 0.5}


def _recipes(config: dict[str, Any], n: int) -> list[dict[str, Any]]:
    source = build_source(config, shape=SHAPE, seed=3)
    return [q.recipe for q in itertools.islice(iter(source), n)]


def test_every_stacked_affine_recipe_names_factors_within_their_classes() -> None:
    classes = factor_classes(parse_source_config(LAYERED))
    assert classes == AFFINE_FACTORS
    seen_layered = set()
    for recipe in _recipes(LAYERED, 40):
        factors = recipe_factors(recipe)
        assert factors["layered"] == int("layered" in recipe)
        seen_layered.add(factors["layered"])
        for name, value in factors.items():
            assert 0 <= value < classes[name], name
        camera = {n for n in factors if n.startswith("camera_")}
        sprite = {n for n in factors if n.startswith("sprite_")}
        assert (camera and not sprite) if factors["layered"] == 0 else (sprite and not camera)
    assert seen_layered == {0, 1}


def test_factors_follow_the_recipe() -> None:
    recipe = _recipes({"kind": "stacked_affine"}, 1)[0]
    motion = recipe["motion"]
    motion.update(zoom0=0.8, zoom1=1.2, angle0_deg=10.0, angle1_deg=-5.0, profile="linear")
    factors = recipe_factors(recipe)
    assert factors["camera_zooms_in"] == 1 and factors["camera_turns_clockwise"] == 0
    assert factors["camera_pingpong"] == 0

    scene = next(r for r in _recipes(LAYERED, 20) if "layered" in r)
    sprite = scene["layered"]["sprites"][0]
    sprite.update(path="still", pulse={"depth": 0.3, "cycles": 2.0, "phase": 0.0}, turn=-1.0)
    factors = recipe_factors(scene)
    assert factors["sprite_path"] == 3 and factors["sprite_pulses"] == 1
    assert factors["sprite_turn"] == 2
    assert "sprite_moves_right" not in factors  # a still sprite has no direction


def test_a_mix_names_the_factors_of_its_parts_and_none_for_natural_clips() -> None:
    mix = {
        "kind": "mix",
        "parts": [
            {"source": {"kind": "synthactions", "seed": 1, "labelled": True}, "weight": 1},
            {"source": LAYERED, "weight": 1},
        ],
    }
    assert factor_classes(parse_source_config(mix)) == AFFINE_FACTORS
    by_part = {r["part"]: recipe_factors(r) for r in _recipes(mix, 4)}
    assert by_part[0] == {} and "layered" in by_part[1]


def test_a_source_without_factors_is_refused_with_the_ones_that_have_them() -> None:
    with pytest.raises(SourceError, match=r"'noise' name no motion factors.*stacked_affine"):
        factor_classes(parse_source_config({"kind": "noise"}))


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"source": {"kind": "noise"}}, "train.pretext: the recipes of source 'noise'"),
        ({"datafree": {}}, "a data-free run has none"),
    ],
)
def test_pretext_config_needs_a_source_with_factors(query: dict[str, Any], message: str) -> None:
    raw = {
        "budget": 10,
        "query": query,
        "train": {"pretext": {"steps": 10}},
        "eval": {"source": {"kind": "synthactions", "seed": 5, "labelled": True}},
    }
    with pytest.raises(ConfigError, match=message):
        validate_config(raw, source="attack.yaml")
