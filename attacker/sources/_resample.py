"""Pixel resampling in numpy/PIL: bilinear gathers at arbitrary coordinates, and clip resizing."""

from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image

from attacker.sources._base import ClipShape

__all__ = ["Border", "resize_clip", "sample_bilinear", "temporal_indices"]

Border = Literal["reflect", "wrap", "black"]


def _prepare(
    image: np.ndarray, ys: np.ndarray, xs: np.ndarray, border: Border
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pad ``image`` for ``border`` and move the coordinates into the padded image's range,
    where every 2x2 neighbourhood the interpolation reads exists."""
    height, width = image.shape[:2]
    if border == "black":  # zeros around the image; beyond one pixel out everything is zero
        padded = np.pad(image, ((1, 2), (1, 2), (0, 0)))
        return padded, np.clip(ys, -1.0, height) + 1.0, np.clip(xs, -1.0, width) + 1.0
    padded = np.pad(image, ((0, 1), (0, 1), (0, 0)), mode="wrap" if border == "wrap" else "edge")
    return padded, _fold(ys, height, border), _fold(xs, width, border)


def _fold(coords: np.ndarray, size: int, border: Border) -> np.ndarray:
    """Map continuous coordinates into ``[0, size)`` (wrap) or ``[0, size - 1]`` (reflect)."""
    if size == 1:
        return np.zeros_like(coords)
    if border == "reflect" and coords.min() >= 0.0 and coords.max() <= size - 1:
        return coords  # nothing to mirror (the common case when zoomed in)
    if border == "wrap":
        return coords - size * np.floor(coords * (1.0 / size))
    period = 2.0 * (size - 1)
    wrapped = coords - period * np.floor(coords * (1.0 / period))  # np.mod, but faster
    return (size - 1) - np.abs(wrapped - (size - 1))


def sample_bilinear(
    image: np.ndarray, ys: np.ndarray, xs: np.ndarray, *, border: Border = "reflect"
) -> np.ndarray:
    """Sample ``image`` (h, w, C) float at pixel coordinates ``ys``/``xs`` (any equal shapes).

    Coordinates are array indices (pixel centres at integers). Returns ``(*ys.shape, C)`` in the
    image's float dtype. ``reflect`` mirrors the image about its edge pixels, ``wrap`` tiles it,
    ``black`` is zero from one pixel outside the image on (fading across that pixel).
    """
    padded, ys, xs = _prepare(image, ys, xs, border)
    channels = image.shape[2]
    # Each cell holds its 2x2 neighbourhood, so one gather per sample reads all four corners;
    # planes (corner, channel) first, so the arithmetic runs over long contiguous rows.
    quads = np.stack(
        [padded[:-1, :-1], padded[:-1, 1:], padded[1:, :-1], padded[1:, 1:]], axis=0
    )  # (4, h', w', C)
    rows, cols = quads.shape[1:3]
    planes = np.ascontiguousarray(np.moveaxis(quads, 3, 1).reshape(4, channels, rows * cols))
    y0 = np.minimum(np.floor(ys.ravel()), rows - 1)
    x0 = np.minimum(np.floor(xs.ravel()), cols - 1)
    fy = (ys.ravel() - y0).astype(image.dtype)
    fx = (xs.ravel() - x0).astype(image.dtype)
    cell = y0.astype(np.intp) * cols + x0.astype(np.intp)
    c00, c01, c10, c11 = np.take(planes, cell, axis=2)  # each (C, N)
    top = c00 + (c01 - c00) * fx
    bottom = c10 + (c11 - c10) * fx
    values = top + (bottom - top) * fy  # (C, N)
    return np.moveaxis(values.reshape(channels, *ys.shape), 0, -1)


def temporal_indices(have: int, want: int) -> np.ndarray:
    """``want`` frame indices sampled uniformly from ``have`` frames (repeats when fewer)."""
    return np.linspace(0, have - 1, want).round().astype(np.intp)


def resize_clip(
    clip: np.ndarray, shape: ClipShape, *, mode: Literal["crop", "squash"] = "crop"
) -> np.ndarray:
    """Resize a uint8 clip ``(T', H', W', 3)`` to ``shape``: uniform frame sampling in time,
    PIL bilinear (antialiased when shrinking) in space. ``crop`` keeps the aspect ratio by
    cropping the centre of the longer side; ``squash`` stretches.
    """
    if clip.ndim != 4 or clip.shape[-1] != 3 or 0 in clip.shape:
        raise ValueError(f"expected a clip (T, H, W, 3), got shape {clip.shape}")
    if clip.shape[0] != shape.frames:
        clip = clip[temporal_indices(clip.shape[0], shape.frames)]
    _, height, width, _ = clip.shape
    if (height, width) == (shape.height, shape.width):
        return np.ascontiguousarray(clip, dtype=np.uint8)
    box = (0.0, 0.0, float(width), float(height))
    if mode == "crop":
        scale = max(shape.height / height, shape.width / width)
        crop_w, crop_h = shape.width / scale, shape.height / scale
        left, top = (width - crop_w) / 2.0, (height - crop_h) / 2.0
        box = (left, top, left + crop_w, top + crop_h)
    out = np.empty(shape.array_shape, dtype=np.uint8)
    for t, frame in enumerate(clip):
        image = Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8), mode="RGB")
        out[t] = np.asarray(
            image.resize((shape.width, shape.height), Image.Resampling.BILINEAR, box=box)
        )
    return out
