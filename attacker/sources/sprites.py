"""Layered stacked-affine clips: textured sprites moving over a still background image.

A whole-frame affine warp (camera motion) is a poor probe of a classifier of *things that
move*; a layered clip adds what action videos are made of: a few foreground layers, each an
image cut out by a random mask, following its own affine trajectory (straight, back and forth,
or round a circle; turning, sometimes rocking; growing or shrinking, sometimes pulsing) with an
opacity schedule (steady, blinking or fading) and sometimes a jitter. Every parameter is drawn
from wide generic ranges from a generator seeded by (seed, index), and the recipe holds them
all, so clips re-create exactly.

Geometry: a sprite's pose at frame t is centre (x, y) in frame pixels, angle (radians,
clockwise on screen) and radius (pixels). Each frame pixel is mapped into the sprite's unit
coordinates (u, v) = R(-angle) (p - centre) / radius; the mask is a signed shape function of
(u, v) and the sprite's texture is sampled at (u, v) scaled into the texture image.
"""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np

from attacker.sources._base import ClipShape, clip_rng, finish_clip, to_uint8
from attacker.sources._resample import sample_bilinear
from attacker.sources.textures import PATTERNS, draw_texture

__all__ = ["MASKS", "SPRITE_FACTORS", "render_layered", "sample_layered", "sprite_factors"]

_TEXTURE_STREAM: Final = 31
_TEXTURE_SIZE: Final = 48
PATTERN_NAMES: Final = tuple(PATTERNS)

# Chance that a sprite's angle rocks / its size pulses back and forth over the clip, as its
# centre does on a "pingpong" path.
_SWING_CHANCE: Final = 0.2
_PULSE_CHANCE: Final = 0.2
MASKS: Final = ("ellipse", "rectangle", "triangle", "cross", "star", "half_disk")
PATHS: Final = ("line", "pingpong", "circle", "still")
OPACITIES: Final = ("steady", "blink", "fade")

#: The motion factors a layered scene's recipe names, read off its first sprite (the only one
#: in 70% of scenes): factor -> number of values (see :func:`sprite_factors`).
SPRITE_FACTORS: Final = {
    "sprite_path": len(PATHS),
    "sprite_opacity": len(OPACITIES),
    "sprite_pulses": 2,
    "sprite_rocks": 2,
    "sprite_jitters": 2,
    "sprite_turn": 3,
    "sprite_grows": 2,
    "sprite_moves_right": 2,
    "sprite_moves_down": 2,
}


def _mask(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed inside-ness of the unit shape (> 0 inside), in units of the radius."""
    if kind == "ellipse":
        return 1.0 - np.sqrt(u * u + (v / 0.6) ** 2)
    if kind == "rectangle":
        return np.minimum(0.9 - np.abs(u), 0.55 - np.abs(v))
    if kind == "triangle":
        return np.minimum(
            np.minimum(0.5 + v, 0.5 - (0.5 * v + 0.866 * u)), 0.5 - (0.5 * v - 0.866 * u)
        )
    if kind == "cross":
        return np.maximum(
            np.minimum(0.3 - np.abs(u), 0.95 - np.abs(v)),
            np.minimum(0.3 - np.abs(v), 0.95 - np.abs(u)),
        )
    if kind == "star":
        r = np.sqrt(u * u + v * v)
        return 0.65 + 0.3 * np.cos(5.0 * np.arctan2(v, u)) - r
    if kind == "half_disk":
        return np.minimum(1.0 - np.sqrt(u * u + v * v), u + 0.2)
    raise ValueError(f"unknown mask {kind!r}")


def sample_layered(rng: np.random.Generator, *, seed: int, index: int) -> dict[str, Any]:
    """A random layered scene (JSON-ready): background image and 1-2 sprites."""
    sprites = []
    for layer in range(1 if rng.uniform() < 0.7 else 2):
        path = str(rng.choice(PATHS, p=[0.4, 0.25, 0.2, 0.15]))
        sprites.append(
            {
                "texture": str(rng.choice(PATTERN_NAMES)),
                "texture_index": 2 * index + layer + 1,
                "mask": str(rng.choice(MASKS)),
                "radius": [float(rng.uniform(0.1, 0.3)), float(rng.uniform(0.1, 0.3))],
                "start": [float(v) for v in rng.uniform(0.2, 0.8, size=2)],
                "path": path,
                "velocity": [float(v) for v in rng.uniform(-0.6, 0.6, size=2)],
                "cycles": float(rng.uniform(0.5, 3.0)),
                "phase": float(rng.uniform(0, 2 * math.pi)),
                "turn": float(rng.choice([0.0, rng.uniform(-1.5, 1.5)], p=[0.4, 0.6]) * math.pi),
                "angle0": float(rng.uniform(0, 2 * math.pi)),
                "opacity": str(rng.choice(OPACITIES, p=[0.8, 0.12, 0.08])),
                "opacity_cycles": float(rng.uniform(1.5, 4.0)),
                "jitter": float(rng.choice([0.0, rng.uniform(0.02, 0.08)], p=[0.85, 0.15])),
            }
        )
    scene = {
        "background": {
            "texture": str(rng.choice(PATTERN_NAMES)),
            "texture_index": 2 * index,
            "contrast": float(rng.uniform(0.1, 1.0)),
        },
        "sprites": sprites,
        "noise": float(rng.uniform(0.0, 6.0)),
        "seed": seed,
    }
    # Drawn after everything above, so a scene's other parameters are those it had before
    # sprites could swing and pulse.
    for sprite in sprites:
        sprite["swing"] = _oscillation(rng, _SWING_CHANCE, depth=(0.1, 0.5))
        sprite["pulse"] = _oscillation(rng, _PULSE_CHANCE, depth=(0.1, 0.5))
    return scene


def sprite_factors(scene: dict[str, Any]) -> dict[str, int]:
    """The :data:`SPRITE_FACTORS` of a scene: its first sprite's path, opacity schedule, whether
    it pulses, rocks and jitters, its turn (none, clockwise, anticlockwise), whether it grows,
    and, on a line or back-and-forth path, the signs of its velocity."""
    sprite = scene["sprites"][0]
    turn = float(sprite["turn"])
    factors = {
        "sprite_path": PATHS.index(sprite["path"]),
        "sprite_opacity": OPACITIES.index(sprite["opacity"]),
        "sprite_pulses": int(sprite.get("pulse") is not None),
        "sprite_rocks": int(sprite.get("swing") is not None),
        "sprite_jitters": int(float(sprite["jitter"]) > 0),
        "sprite_turn": 0 if turn == 0 else (1 if turn > 0 else 2),
        "sprite_grows": int(sprite["radius"][1] > sprite["radius"][0]),
    }
    if sprite["path"] in ("line", "pingpong"):
        factors["sprite_moves_right"] = int(sprite["velocity"][0] > 0)
        factors["sprite_moves_down"] = int(sprite["velocity"][1] > 0)
    return factors


def _oscillation(
    rng: np.random.Generator, chance: float, *, depth: tuple[float, float]
) -> dict[str, float] | None:
    """Back-and-forth parameters (``depth``: the swing's amplitude, ``cycles`` over the clip,
    ``phase``), or ``None`` (a ramp) with probability ``1 - chance``."""
    if rng.uniform() >= chance:
        return None
    return {
        "depth": float(rng.uniform(*depth)),
        "cycles": float(rng.uniform(0.5, 3.0)),
        "phase": float(rng.uniform(0, 2 * math.pi)),
    }


def _back_and_forth(spec: dict[str, float] | None, tau: np.ndarray) -> np.ndarray:
    """``depth * sin(2 pi cycles tau + phase)`` per frame, or zeros for no oscillation."""
    if spec is None:
        return np.zeros_like(tau)
    wave: np.ndarray = spec["depth"] * np.sin(2 * math.pi * spec["cycles"] * tau + spec["phase"])
    return wave


def _texture(seed: int, index: int, pattern: str, size: int) -> np.ndarray:
    return draw_texture(clip_rng(seed, _TEXTURE_STREAM, index), size, size, pattern=pattern)


def _trajectory(
    sprite: dict[str, Any], tau: np.ndarray, rng: np.random.Generator, size: float
) -> tuple[np.ndarray, ...]:
    start = np.array(sprite["start"]) * size
    velocity = np.array(sprite["velocity"]) * size
    phase, cycles = sprite["phase"], sprite["cycles"]
    if sprite["path"] == "line":
        centre = start[:, None] + velocity[:, None] * (tau - 0.5)[None]
    elif sprite["path"] == "pingpong":
        centre = start[:, None] + 0.5 * velocity[:, None] * np.sin(
            2 * math.pi * cycles * tau + phase
        )
    elif sprite["path"] == "circle":
        radius = 0.5 * float(np.linalg.norm(velocity))
        theta = phase + math.copysign(2 * math.pi, velocity[0]) * cycles * tau / 2
        centre = start[:, None] + radius * np.stack([np.cos(theta), np.sin(theta)])
    else:
        centre = np.repeat(start[:, None], len(tau), axis=1)
    if sprite["jitter"] > 0:
        centre = centre + rng.uniform(-1, 1, size=centre.shape) * sprite["jitter"] * size
    # Angle and size ramp (turning; growing or shrinking) and may also swing back and forth
    # (rocking: ``swing`` in half-turns; pulsing: ``pulse`` as a fraction of the size); recipes
    # from before these keys existed have neither.
    angle = (
        sprite["angle0"]
        + sprite["turn"] * tau
        + math.pi * _back_and_forth(sprite.get("swing"), tau)
    )
    r0, r1 = sprite["radius"]
    radius = r0 * (r1 / r0) ** tau * (1.0 + _back_and_forth(sprite.get("pulse"), tau)) * size
    if sprite["opacity"] == "blink":
        opacity = (np.sin(2 * math.pi * sprite["opacity_cycles"] * tau + phase) > 0).astype(float)
    elif sprite["opacity"] == "fade":
        opacity = tau if phase < math.pi else 1.0 - tau
    else:
        opacity = np.ones_like(tau)
    return centre[0], centre[1], angle, radius, opacity


def render_layered(scene: dict[str, Any], shape: ClipShape, *, index: int) -> np.ndarray:
    frames, height, width = shape.frames, shape.height, shape.width
    size = float(min(height, width))
    seed = int(scene["seed"])
    rng = clip_rng(seed, _TEXTURE_STREAM + 1, index)  # jitter and sensor noise
    tau = np.linspace(0.0, 1.0, frames)
    bg = scene["background"]
    background = _texture(seed, bg["texture_index"], bg["texture"], max(height, width))
    mean = background.mean(axis=(0, 1), keepdims=True)
    background = mean + (background - mean) * bg["contrast"]
    canvas = np.repeat(background[None, :height, :width].astype(np.float32), frames, axis=0)
    ys = (np.arange(height, dtype=np.float32) + 0.5)[None, :, None]
    xs = (np.arange(width, dtype=np.float32) + 0.5)[None, None, :]
    for sprite in scene["sprites"]:
        cx, cy, angle, radius, opacity = _trajectory(sprite, tau, rng, size)
        cos = (np.cos(angle) / radius)[:, None, None].astype(np.float32)
        sin = (np.sin(angle) / radius)[:, None, None].astype(np.float32)
        dx = xs - cx[:, None, None].astype(np.float32)
        dy = ys - cy[:, None, None].astype(np.float32)
        u = dx * cos + dy * sin  # (T, H, W)
        v = dy * cos - dx * sin
        inside = _mask(sprite["mask"], u, v) * radius[:, None, None]
        alpha = np.clip(inside + 0.5, 0.0, 1.0) * opacity[:, None, None]
        texture = _texture(seed, sprite["texture_index"], sprite["texture"], _TEXTURE_SIZE)
        half = _TEXTURE_SIZE / 2.0
        colour = sample_bilinear(
            texture, v * half + half - 0.5, u * half + half - 0.5, border="wrap"
        )
        canvas += alpha[..., None].astype(np.float32) * (colour - canvas)
    if scene["noise"] > 0:
        canvas += rng.normal(0.0, scene["noise"], size=canvas.shape[:3])[..., None]
    return finish_clip(to_uint8(canvas), shape)
