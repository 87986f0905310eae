"""Procedural still images for stacked-affine clips when no image folder is given.

Each pattern is drawn from a seeded generator as float32 RGB in [0, 255]: sinusoidal or square
gratings (one or two, i.e. plaids), rotated checkerboards, Gaussian blobs, random filled shapes
(rectangles, ellipses, triangles), smooth colour noise, and concentric rings. Colours, scales,
orientations and contrasts are random, so the textures cover a wide range of statistics.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final

import numpy as np

from attacker.sources._resample import sample_bilinear

__all__ = ["PATTERNS", "draw_texture"]

_Pattern = Callable[[np.random.Generator, np.ndarray, np.ndarray], np.ndarray]


def _colours(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random RGB colours (n, 3) in [0, 255], not all alike."""
    colours = rng.uniform(0.0, 255.0, size=(n, 3))
    if n >= 2 and np.abs(colours[0] - colours[1]).max() < 60.0:
        colours[1] = 255.0 - colours[0]
    return colours


def _blend(weight: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """``low`` where weight is 0, ``high`` where it is 1: (h, w) weight -> (h, w, 3)."""
    return low + weight[..., None] * (high - low)


def _grating(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    size = float(max(yy.shape))
    wave = np.zeros(yy.shape)
    components = int(rng.integers(1, 3))
    for _ in range(components):
        angle = rng.uniform(0.0, math.pi)
        period = rng.uniform(3.0, size)
        phase = rng.uniform(0.0, 2.0 * math.pi)
        along = xx * math.cos(angle) + yy * math.sin(angle)
        wave += np.sin(2.0 * math.pi * along / period + phase)
    wave /= components
    if rng.uniform() < 0.4:
        wave = np.sign(wave)  # square wave: hard edges
    low, high = _colours(rng, 2)
    return _blend(0.5 + 0.5 * wave, low, high)


def _checkerboard(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    size = float(max(yy.shape))
    cell = rng.uniform(2.0, size / 2.0)
    angle = rng.uniform(0.0, math.pi / 2.0)
    u = xx * math.cos(angle) + yy * math.sin(angle)
    v = -xx * math.sin(angle) + yy * math.cos(angle)
    parity = (np.floor(u / cell) + np.floor(v / cell)) % 2.0
    low, high = _colours(rng, 2)
    return _blend(parity, low, high)


def _blobs(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    height, width = yy.shape
    size = float(max(height, width))
    colours = _colours(rng, 9)
    image = np.broadcast_to(colours[0], (height, width, 3)).copy()
    for colour in colours[1 : 1 + int(rng.integers(2, 9))]:
        cy, cx = rng.uniform(0.0, height), rng.uniform(0.0, width)
        sigma = rng.uniform(0.04, 0.25) * size
        weight = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2.0 * sigma**2))
        image += weight[..., None] * (colour - image)
    return image


def _shapes(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    height, width = yy.shape
    size = float(max(height, width))
    colours = _colours(rng, 13)
    image = np.broadcast_to(colours[0], (height, width, 3)).copy()
    for colour in colours[1 : 1 + int(rng.integers(3, 13))]:
        cy, cx = rng.uniform(0.0, height), rng.uniform(0.0, width)
        ry, rx = rng.uniform(0.05, 0.3, size=2) * size
        angle = rng.uniform(0.0, math.pi)
        u = ((xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)) / rx
        v = (-(xx - cx) * math.sin(angle) + (yy - cy) * math.cos(angle)) / ry
        kind = int(rng.integers(3))
        if kind == 0:
            inside = (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
        elif kind == 1:
            inside = u * u + v * v <= 1.0
        else:  # triangle: three half-planes
            inside = (v >= -0.5) & (v <= 1.0 - 1.5 * np.abs(u))
        image[inside] = colour
    return image


def _colour_noise(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    height, width = yy.shape
    cells = int(rng.integers(3, 17))
    lattice = rng.uniform(0.0, 255.0, size=(cells, cells, 3))
    ys = yy * ((cells - 1) / max(height - 1, 1))
    xs = xx * ((cells - 1) / max(width - 1, 1))
    image = sample_bilinear(lattice, ys, xs)
    grain = rng.uniform(0.0, 40.0)
    return image + grain * rng.standard_normal((height, width, 3))


def _rings(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    height, width = yy.shape
    size = float(max(height, width))
    cy, cx = rng.uniform(0.0, height), rng.uniform(0.0, width)
    period = rng.uniform(3.0, size / 2.0)
    radius = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    spokes = int(rng.integers(0, 9))
    wave = np.sin(2.0 * math.pi * radius / period)
    if spokes:
        wave = wave * np.sign(np.sin(spokes * np.arctan2(yy - cy, xx - cx)))
    low, high = _colours(rng, 2)
    return _blend(0.5 + 0.5 * wave, low, high)


PATTERNS: Final[dict[str, _Pattern]] = {
    "grating": _grating,
    "checkerboard": _checkerboard,
    "blobs": _blobs,
    "shapes": _shapes,
    "colour_noise": _colour_noise,
    "rings": _rings,
}


def draw_texture(rng: np.random.Generator, height: int, width: int, *, pattern: str) -> np.ndarray:
    """Pattern ``pattern`` drawn from ``rng``: float32 (height, width, 3) in [0, 255]."""
    try:
        draw = PATTERNS[pattern]
    except KeyError:
        raise ValueError(f"unknown texture pattern {pattern!r}; known: {list(PATTERNS)}") from None
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    return np.clip(draw(rng, yy, xx), 0.0, 255.0).astype(np.float32)
