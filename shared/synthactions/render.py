"""Rasterise one textured object moving over a static textured background, in NumPy.

Everything here is vectorised over the clip's frames; one 16x32x32 clip renders in well under
a millisecond, so training data can be generated on the fly.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from shared.synthactions.motions import Trajectory

__all__ = ["SHAPES", "draw_background", "draw_object_colours", "render_clip"]

# Signed "inside-ness" of a shape in object coordinates (u, v), unit radius: > 0 inside.
ShapeFn = Callable[[np.ndarray, np.ndarray], np.ndarray]

SHAPES: dict[str, ShapeFn] = {
    "disk": lambda u, v: 1 - np.sqrt(u * u + v * v),
    "square": lambda u, v: 0.8 - np.maximum(np.abs(u), np.abs(v)),
    "ellipse": lambda u, v: 1 - np.sqrt(u * u + (v / 0.55) ** 2),
    "triangle": lambda u, v: np.minimum(
        np.minimum(0.5 + v, 0.5 - (v * 0.5 + u * 0.866)), 0.5 - (v * 0.5 - u * 0.866)
    ),
    "cross": lambda u, v: np.maximum(
        np.minimum(0.3 - np.abs(u), 0.95 - np.abs(v)), np.minimum(0.3 - np.abs(v), 0.95 - np.abs(u))
    ),
    "bar": lambda u, v: np.minimum(1 - np.abs(u), 0.35 - np.abs(v)),
    "ell": lambda u, v: np.maximum(
        np.minimum(np.minimum(0.35 - np.abs(u + 0.45), 0.9 - np.abs(v)), 1.0),
        np.minimum(0.35 - np.abs(v - 0.55), 0.8 - np.abs(u)),
    ),
}
_SHAPE_NAMES = tuple(SHAPES)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 1.0, size=3)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a coarse random grid, bilinearly upsampled."""
    coarse = rng.uniform(0, 1, size=(cells + 1, cells + 1))
    ys = np.linspace(0, cells, height)
    xs = np.linspace(0, cells, width)
    y0 = np.minimum(ys.astype(int), cells - 1)
    x0 = np.minimum(xs.astype(int), cells - 1)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    top = coarse[y0][:, x0] * (1 - fx) + coarse[y0][:, x0 + 1] * fx
    bottom = coarse[y0 + 1][:, x0] * (1 - fx) + coarse[y0 + 1][:, x0 + 1] * fx
    return np.asarray(top * (1 - fy) + bottom * fy)


def draw_background(
    rng: np.random.Generator, height: int, width: int, contrast: float
) -> np.ndarray:
    """A static (H, W, 3) background in [0, 1]: solid, gradient, grating, checker or blobs."""
    base = _random_colour(rng)
    other = _random_colour(rng)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    kind = rng.integers(5)
    if kind == 0:
        weight = np.zeros((height, width))
    elif kind == 1:
        theta = rng.uniform(0, 2 * np.pi)
        ramp = (xs * np.cos(theta) + ys * np.sin(theta)) / max(height, width)
        weight = ramp - ramp.min()
    elif kind == 2:
        theta = rng.uniform(0, np.pi)
        period = rng.uniform(3.0, 10.0)
        phase = rng.uniform(0, 2 * np.pi)
        weight = 0.5 + 0.5 * np.sin(
            2 * np.pi * (xs * np.cos(theta) + ys * np.sin(theta)) / period + phase
        )
    elif kind == 3:
        cell = int(rng.integers(3, 9))
        weight = (((ys // cell) + (xs // cell)) % 2).astype(np.float64)
    else:
        weight = _smooth_noise(rng, height, width, cells=int(rng.integers(2, 6)))
    weight = np.clip(weight, 0, 1) * contrast
    return np.asarray(base * (1 - weight[..., None]) + other * weight[..., None])


def draw_object_colours(
    rng: np.random.Generator, background_mean: np.ndarray, min_contrast: float
) -> tuple[np.ndarray, np.ndarray]:
    """Two object colours (main, marker) that stand out from the background's mean colour."""
    colours = []
    for _ in range(2):
        for _attempt in range(20):
            colour = _random_colour(rng)
            if np.abs(colour - background_mean).max() >= min_contrast:
                break
        else:  # fall back to the colour opposite the background
            colour = np.where(background_mean > 0.5, 0.0, 1.0)
        colours.append(colour)
    main, marker = colours
    if np.abs(main - marker).max() < 0.3:
        marker = 1.0 - main
    return main, marker


def render_clip(
    *,
    rng: np.random.Generator,
    trajectory: Trajectory,
    background: np.ndarray,
    radius: float,
    shape: str,
    main: np.ndarray,
    marker: np.ndarray,
    texture: int,
    noise_std: float,
) -> np.ndarray:
    """Composite the moving object over the background; returns uint8 (T, H, W, 3)."""
    height, width = background.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) + np.float32(0.5)
    t = trajectory
    dx = xs[None] - t.x.astype(np.float32)[:, None, None]  # T H W
    dy = ys[None] - t.y.astype(np.float32)[:, None, None]
    cos = np.cos(t.angle).astype(np.float32)[:, None, None]
    sin = np.sin(t.angle).astype(np.float32)[:, None, None]
    r = (radius * t.scale).astype(np.float32)[:, None, None]
    u = (dx * cos + dy * sin) / r
    v = (dy * cos - dx * sin) / r
    inside = SHAPES[shape](u, v)
    # Anti-aliased coverage: the signed distance in pixels, clamped to [0, 1].
    coverage = np.clip(inside * r + 0.5, 0.0, 1.0) * t.visible.astype(np.float32)[:, None, None]
    marked = _texture(texture, u, v) * coverage  # T H W
    plain = coverage - marked
    keep = 1 - coverage
    noise = None
    if noise_std > 0:  # luminance noise, shared by the three channels
        noise = rng.standard_normal(size=coverage.shape, dtype=np.float32)
        noise *= np.float32(noise_std * 255.0)
    out = np.empty((*coverage.shape, 3), dtype=np.uint8)  # T H W C
    for channel in range(3):
        # frame = background * (1 - coverage) + main * plain + marker * marked, in 0..255
        plane = keep * np.float32(255.0) * background[None, :, :, channel].astype(np.float32)
        plane += plain * np.float32(255.0 * main[channel])
        plane += marked * np.float32(255.0 * marker[channel])
        if noise is not None:
            plane += noise
        plane += 0.5
        np.clip(plane, 0.0, 255.0, out=plane)
        out[..., channel] = plane
    return out


def _texture(kind: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Where the marker colour shows on the object; none of these is rotation-symmetric."""
    if kind == 0:  # front half
        mask = u > 0.15
    elif kind == 1:  # stripes along one axis plus a solid quarter
        mask = (np.sin(u * 5.0) > 0) | ((u > 0.3) & (v > 0.3))
    elif kind == 2:  # off-centre dot
        mask = ((u - 0.45) ** 2 + (v - 0.1) ** 2) < 0.12
    else:  # one quadrant
        mask = (u > 0) & (v > 0)
    return mask.astype(np.float32)


TEXTURES = 4
SHAPE_NAMES = _SHAPE_NAMES
