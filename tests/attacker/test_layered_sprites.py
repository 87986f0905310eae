"""Layered stacked-affine scenes: sprites' poses ramp, and may swing (angle) or pulse (size)."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from attacker.sources._base import ClipShape, clip_rng
from attacker.sources.sprites import _trajectory, render_layered, sample_layered

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
