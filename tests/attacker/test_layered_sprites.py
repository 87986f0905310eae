"""Layered stacked-affine scenes: sprites' poses ramp, and may swing (angle) or pulse (size)."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from attacker.sources._base import ClipShape, clip_rng
from attacker.sources.sprites import (
    SOLO_MOTIONS,
    _keep_one_motion,
    _trajectory,
    render_layered,
    sample_layered,
)

SHAPE = ClipShape(16, 32, 32)


def _sprite(**overrides: Any) -> dict[str, Any]:
    sprite: dict[str, Any] = {
        "texture": "checkerboard",
        "texture_index": 1,
        "mask": "ellipse",
        "radius": [0.2, 0.2],
        "start": [0.5, 0.5],
        "path": "still",
        "velocity": [0.0, 0.0],
        "cycles": 1.0,
        "phase": 0.0,
        "turn": 0.0,
        "angle0": 0.0,
        "opacity": "steady",
        "opacity_cycles": 2.0,
        "jitter": 0.0,
    }
    sprite.update(overrides)
    return sprite


def _poses(sprite: dict[str, Any]) -> tuple[np.ndarray, ...]:
    tau = np.linspace(0.0, 1.0, SHAPE.frames)
    return _trajectory(sprite, tau, np.random.default_rng(0), 32.0)


def test_a_pulsing_sprite_grows_and_shrinks_back() -> None:
    pulse = {"depth": 0.4, "cycles": 2.0, "phase": 0.0}
    radius = _poses(_sprite(pulse=pulse))[3]
    steady = _poses(_sprite())[3]
    np.testing.assert_allclose(steady, 0.2 * 32.0)
    assert radius.max() > 1.3 * steady[0] and radius.min() < 0.7 * steady[0]
    growing = np.diff(radius) > 0
    assert growing.any() and (~growing).any()  # not a ramp: it turns back
    assert math.isclose(radius[0], radius[-1], rel_tol=1e-9)  # whole cycles end where they began


def test_a_swinging_sprite_rocks_around_its_ramp() -> None:
    swing = {"depth": 0.25, "cycles": 1.0, "phase": 0.5 * math.pi}
    angle = _poses(_sprite(turn=math.pi, swing=swing))[2]
    ramp = _poses(_sprite(turn=math.pi))[2]
    np.testing.assert_allclose(ramp, np.linspace(0.0, math.pi, SHAPE.frames))
    offset = angle - ramp
    assert math.isclose(offset.max(), 0.25 * math.pi, rel_tol=1e-9)  # at frame 0 (phase pi/2)
    assert math.isclose(offset.min(), -0.25 * math.pi, rel_tol=0.05)  # mid-clip, between frames


def test_scenes_without_the_oscillation_keys_render_as_ramps() -> None:
    """Recipes written before sprites could swing or pulse re-create the same clips."""
    scene = sample_layered(clip_rng(3, 24, 7), seed=3, index=7)
    for sprite in scene["sprites"]:
        sprite["swing"] = None
        sprite["pulse"] = None
    old = copy.deepcopy(scene)
    for sprite in old["sprites"]:
        del sprite["swing"], sprite["pulse"]
    np.testing.assert_array_equal(
        render_layered(scene, SHAPE, index=7), render_layered(old, SHAPE, index=7)
    )


def test_some_sprites_swing_or_pulse_and_clips_recreate() -> None:
    scenes = [sample_layered(clip_rng(11, 24, i), seed=11, index=i) for i in range(300)]
    assert scenes[:20] == [sample_layered(clip_rng(11, 24, i), seed=11, index=i) for i in range(20)]
    sprites = [sprite for scene in scenes for sprite in scene["sprites"]]
    pulsing = np.mean([s["pulse"] is not None for s in sprites])
    swinging = np.mean([s["swing"] is not None for s in sprites])
    assert 0.12 < pulsing < 0.28 and 0.12 < swinging < 0.28
    scene = next(scene for scene in scenes if scene["sprites"][0]["pulse"])
    static = copy.deepcopy(scene)
    static["sprites"][0]["pulse"] = None
    assert not np.array_equal(
        render_layered(scene, SHAPE, index=0), render_layered(static, SHAPE, index=0)
    )


def _motions(sprite: dict[str, Any]) -> set[str]:
    """The kinds of motion a sprite makes (the names of ``SOLO_MOTIONS``)."""
    made = {
        "path": sprite["path"] != "still",
        "turn": sprite["turn"] != 0.0,
        "size": sprite["radius"][0] != sprite["radius"][1],
        "pulse": sprite["pulse"] is not None,
        "swing": sprite["swing"] is not None,
        "opacity": sprite["opacity"] != "steady",
        "jitter": sprite["jitter"] > 0.0,
    }
    return {name for name, moves in made.items() if moves}


def test_some_sprites_make_each_kind_of_motion_alone() -> None:
    scenes = [sample_layered(clip_rng(11, 24, i), seed=11, index=i) for i in range(600)]
    made = [_motions(sprite) for scene in scenes for sprite in scene["sprites"]]
    alone = [next(iter(m)) for m in made if len(m) == 1]
    assert set(alone) == set(SOLO_MOTIONS)
    assert all(alone.count(name) >= 10 for name in SOLO_MOTIONS if name != "size")
    # Most sprites still mix several motions.
    assert np.mean([len(m) >= 2 for m in made]) > 0.5


def test_a_sprite_kept_to_its_pulse_stays_put_and_swings_in_size() -> None:
    sprite = _sprite(
        path="line",
        velocity=[0.4, -0.3],
        turn=1.0,
        radius=[0.15, 0.3],
        swing={"depth": 0.3, "cycles": 1.0, "phase": 0.0},
        opacity="blink",
        jitter=0.05,
        pulse=None,
    )
    _keep_one_motion(sprite, "pulse", np.random.default_rng(3))
    assert _motions(sprite) == {"pulse"}
    x, y, angle, radius, opacity = _poses(sprite)
    assert np.ptp(x) == 0 and np.ptp(y) == 0 and np.ptp(angle) == 0
    assert np.all(opacity == 1.0)
    base = 0.15 * 32.0
    assert radius.max() > base * 1.05 and radius.min() < base * 0.95
