"""Noise clips: i.i.d. per pixel, or smooth drifting noise with motion energy.

Clip ``i`` of seed ``s`` depends only on ``(s, i)`` and the config, so the stream is infinite,
needs no memory between clips, and any clip can be re-created from its recipe.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Final, Literal

import numpy as np
from pydantic import Field

from attacker.sources._base import (
    RECIPE_VERSION,
    ClipShape,
    QueryClip,
    SourceConfigBase,
    clip_rng,
    finish_clip,
    to_uint8,
)
from attacker.sources.registry import register_source

__all__ = ["NoiseConfig", "NoiseSource", "render_noise"]

_STREAM: Final = 11
_SQRT3: Final = math.sqrt(3.0)


class NoiseConfig(SourceConfigBase):
    """Noise clips.

    ``uniform`` draws from ``mean +- sqrt(3) * std`` (so mean and std are as configured) and
    ``gaussian`` from ``N(mean, std)``; both are clipped to [0, 255] and rounded. ``iid`` draws
    every pixel, channel and frame independently. ``smooth`` draws a coarse random lattice (cells
    of a few pixels, per channel), interpolates it bilinearly, lets it drift at a constant random
    velocity and cross-fade into a second lattice over the clip: the clip has real motion energy,
    and each pixel still has exactly the configured distribution (before clipping).
    """

    kind: Literal["noise"] = "noise"
    distribution: Literal["uniform", "gaussian"] = "uniform"
    mean: float = Field(127.5, ge=0.0, le=255.0)
    std: float = Field(50.0, ge=0.0, le=255.0)
    temporal: Literal["iid", "smooth"] = "iid"


def render_noise(recipe: dict[str, Any], shape: ClipShape) -> np.ndarray:
    """The noise clip a recipe describes."""
    rng = clip_rng(int(recipe["seed"]), _STREAM, int(recipe["index"]))
    mean, std = float(recipe["mean"]), float(recipe["std"])
    uniform = recipe["distribution"] == "uniform"
    if recipe["temporal"] == "iid":
        if uniform:
            half = _SQRT3 * std
            values = rng.uniform(mean - half, mean + half, size=shape.array_shape)
        else:
            values = mean + std * rng.standard_normal(shape.array_shape)
        return finish_clip(to_uint8(values), shape)
    z = _smooth_standard_normal(rng, shape)
    # uniform: map N(0, 1) to U(0, 1) through its CDF, then to mean +- sqrt(3) std
    values = mean + (_SQRT3 * std) * (2.0 * _normal_cdf(z) - 1.0) if uniform else mean + std * z
    return finish_clip(to_uint8(values), shape)


@register_source("noise", config=NoiseConfig, render=render_noise)
class NoiseSource:
    """An infinite stream of noise clips (see :class:`NoiseConfig`)."""

    def __init__(self, config: NoiseConfig, *, shape: ClipShape, seed: int) -> None:
        self.name = "noise"
        self.config = config
        self.shape = shape
        self.seed = seed

    def recipe(self, index: int) -> dict[str, Any]:
        return {
            "v": RECIPE_VERSION,
            "source": "noise",
            "seed": self.seed,
            "index": index,
            "shape": self.shape.as_list(),
            "distribution": self.config.distribution,
            "mean": self.config.mean,
            "std": self.config.std,
            "temporal": self.config.temporal,
        }

    def __iter__(self) -> Iterator[QueryClip]:
        index = 0
        while True:
            recipe = self.recipe(index)
            yield QueryClip(clip=render_noise(recipe, self.shape), recipe=recipe)
            index += 1


def _smooth_standard_normal(rng: np.random.Generator, shape: ClipShape) -> np.ndarray:
    """(T, H, W, 3) float32, each value N(0, 1), smooth in space and drifting in time.

    Two coarse lattices of i.i.d. N(0, 1) values (cells of ``cell`` pixels, one per channel) are
    cross-faded with cos/sin weights (which keeps every lattice value N(0, 1)) and interpolated
    bilinearly at positions that move at a constant velocity. Bilinear interpolation is
    separable, so each frame is ``Wy @ lattice @ Wx.T`` with 2-tap interpolation matrices; each
    matrix row is divided by its L2 norm, which divides every pixel by the standard deviation
    interpolation leaves at that position, so every pixel stays exactly N(0, 1).
    """
    frames, height, width = shape.frames, shape.height, shape.width
    small = float(min(height, width))
    cell = rng.uniform(max(2.0, small / 8.0), max(3.0, small / 3.0))
    speed = rng.uniform(0.25, 1.5)  # pixels per frame
    direction = rng.uniform(0.0, 2.0 * math.pi)
    vy, vx = speed * math.sin(direction), speed * math.cos(direction)
    fade = rng.uniform(0.3, 1.0)  # how far the field evolves into the second lattice
    t = np.arange(frames, dtype=np.float64)
    span = max(frames - 1, 1)

    def lattice_coords(pixels: int, velocity: float) -> np.ndarray:
        low = min(0.0, velocity * span)
        return (np.arange(pixels)[None, :] + 0.5 + velocity * t[:, None] - low) / cell

    ys = lattice_coords(height, vy)  # (T, H), in lattice cells
    xs = lattice_coords(width, vx)  # (T, W)
    rows = math.floor(float(ys.max())) + 2
    cols = math.floor(float(xs.max())) + 2
    first = rng.standard_normal((3, rows, cols))
    second = rng.standard_normal((3, rows, cols))
    theta = (0.5 * math.pi * fade) * t / span
    lattices = (
        np.cos(theta)[:, None, None, None] * first + np.sin(theta)[:, None, None, None] * second
    )  # (T, 3, rows, cols)
    wy = _interpolation_matrix(ys, rows)[:, None]  # (T, 1, H, rows)
    wx = _interpolation_matrix(xs, cols)[:, None]  # (T, 1, W, cols)
    planes = wy @ lattices @ np.swapaxes(wx, -1, -2)  # (T, 3, H, W)
    return np.ascontiguousarray(np.moveaxis(planes, 1, -1), dtype=np.float32)


def _interpolation_matrix(coords: np.ndarray, size: int) -> np.ndarray:
    """(T, N, size) linear-interpolation weights at ``coords`` (T, N), rows of unit L2 norm."""
    low = np.floor(coords)
    frac = coords - low
    index = low.astype(np.intp)
    matrix = np.zeros((*coords.shape, size))
    t_index, n_index = np.indices(coords.shape)
    matrix[t_index, n_index, index] = 1.0 - frac
    matrix[t_index, n_index, index + 1] = frac
    matrix /= np.sqrt((1.0 - frac) ** 2 + frac**2)[..., None]
    return matrix


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    """Standard normal CDF via erf (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7)."""
    x = np.abs(z) / math.sqrt(2.0)
    k = 1.0 / (1.0 + 0.3275911 * x)
    poly = k * (
        0.254829592 + k * (-0.284496736 + k * (1.421413741 + k * (-1.453152027 + k * 1.061405429)))
    )
    erf = 1.0 - poly * np.exp(-x * x)
    return 0.5 * (1.0 + np.sign(z) * erf)
