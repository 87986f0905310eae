"""Generic extraction query families, rendered for SEAT's bank of known attack patterns.

Thieves without data of the victim's domain send synthetic or off-domain queries; these are the
generic families of them, rendered here from their definitions (not from this project's
attacker, which the victim never imports) at the SEAT encoder's input shape. Each clip is drawn
from ``(seed, family, index)`` alone.

* ``uniform_noise``: every pixel of every frame uniform in [0, 255] (Tramer et al. 2016; the
  random baseline of KnockoffNets);
* ``gaussian_noise``: Gaussian noise around a random grey level and contrast, white or low-passed
  at a random scale, frames independent or one field drifting;
* ``warped_image``: one still image (a procedural texture: a smooth random field, gratings,
  random shapes or a mosaic) moved by a random affine trajectory of shift, rotation and zoom,
  the way thieves turn an image set into clips ("stacked" frames);
* ``moving_shapes``: 1-4 textured rectangles or ellipses sliding across a warped image, each
  on its own straight path (composited synthetic scenes, the data-free thief's cheap video);
* ``shuffled_frames``: benign SynthActions clips with their frames in a random order (an
  augmentation that keeps appearance and breaks motion);
* ``slideshow``: 2-4 still images cut one to the next, no motion. Kept out of the bank
  (:data:`HELD_OUT`) to measure how the bank generalises to a family it has never seen.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from typing import Final

import numpy as np
import torch
import torch.nn.functional as F

from shared.synthactions import SynthActions
from victim_server.detection.seat_encoder import ENCODER_SPEC

__all__ = ["FAMILIES", "HELD_OUT", "render_family"]

_Shape = tuple[int, int, int]  # frames, height, width


def _clip_rng(seed: int, family: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(family.encode()), index])


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], scale: int) -> np.ndarray:
    """Gaussian noise of ``shape`` (..., H, W) low-passed by bicubic upsampling from ``scale``
    times fewer pixels; unit variance roughly."""
    *lead, height, width = shape
    small = rng.standard_normal(
        (math.prod(lead) or 1, 1, max(1, height // scale), max(1, width // scale))
    )
    up = F.interpolate(torch.from_numpy(small).float(), size=(height, width), mode="bicubic")
    out = up.numpy().reshape(shape)
    return out / max(float(out.std()), 1e-6)


def _image(rng: np.random.Generator, size: int) -> np.ndarray:
    """A procedural still image, float (size, size, 3) in [0, 255]."""
    kind = int(rng.integers(4))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    colours = rng.uniform(0, 255, (3, 3))
    if kind == 0:  # smooth random field, coloured by a random two-colour ramp per channel
        field_ = _smooth_field(rng, (3, size, size), int(rng.choice([2, 4, 8, 16])))
        return np.clip(128 + rng.uniform(30, 90) * field_, 0, 255).transpose(1, 2, 0)
    if kind == 1:  # gratings at a random orientation and frequency, possibly two summed
        weight = np.zeros((size, size), np.float32)
        for _ in range(int(rng.integers(1, 3))):
            angle, freq = rng.uniform(0, math.pi), rng.uniform(1.0, 8.0)
            phase = rng.uniform(0, 2 * math.pi)
            wave = np.sin(
                2 * math.pi * freq * (xx * math.cos(angle) + yy * math.sin(angle)) + phase
            )
            weight += wave
        weight = (weight - weight.min()) / max(float(np.ptp(weight)), 1e-6)
        return colours[0] + weight[..., None] * (colours[1] - colours[0])
    if kind == 2:  # random rectangles and ellipses on a background
        out = np.broadcast_to(colours[2], (size, size, 3)).copy()
        for _ in range(int(rng.integers(3, 12))):
            cx, cy, rx, ry = (
                rng.uniform(0, 1),
                rng.uniform(0, 1),
                rng.uniform(0.05, 0.4),
                rng.uniform(0.05, 0.4),
            )
            if rng.random() < 0.5:
                mask = (np.abs(xx - cx) < rx) & (np.abs(yy - cy) < ry)
            else:
                mask = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1
            out[mask] = rng.uniform(0, 255, 3)
        return out
    # mosaic: a coarse grid of random colour cells
    cells = int(rng.choice([2, 4, 8]))
    grid = rng.uniform(0, 255, (cells, cells, 3))
    return np.repeat(np.repeat(grid, size // cells, axis=0), size // cells, axis=1)


def _warp(image: np.ndarray, rng: np.random.Generator, shape: _Shape) -> np.ndarray:
    """``image`` (S, S, 3) moved over ``frames`` by a random affine trajectory: float
    (T, H, W, 3)."""
    frames, height, width = shape
    g = np.linspace(0.0, 1.0, frames)
    if rng.random() < 0.5:
        g = 0.5 - 0.5 * np.cos(2 * math.pi * int(rng.integers(1, 3)) * g / 2)
    zoom = np.interp(g, [0, 1], rng.uniform(0.7, 1.6, 2))
    angle = np.interp(g, [0, 1], np.radians(rng.uniform(-45, 45, 2)))
    shift = np.stack([np.interp(g, [0, 1], rng.uniform(-0.3, 0.3, 2)) for _ in range(2)], 1)
    theta = np.zeros((frames, 2, 3), np.float32)
    cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    theta[:, :, 2] = shift
    grid = F.affine_grid(torch.from_numpy(theta), [frames, 3, height, width], align_corners=False)
    src = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()
    mode = "reflection" if rng.random() < 0.5 else "zeros"
    out = F.grid_sample(
        src.expand(frames, -1, -1, -1),
        grid,
        mode="bilinear",
        padding_mode=mode,
        align_corners=False,
    )
    return out.permute(0, 2, 3, 1).numpy()


def _uniform_noise(rng: np.random.Generator, shape: _Shape, seed: int, index: int) -> np.ndarray:
    return rng.integers(0, 256, (*shape, 3), dtype=np.uint8)


def _gaussian_noise(rng: np.random.Generator, shape: _Shape, seed: int, index: int) -> np.ndarray:
    frames, height, width = shape
    scale = int(rng.choice([1, 1, 2, 4, 8]))
    if rng.random() < 0.5:  # independent frames
        noise = _smooth_field(rng, (frames * 3, height, width), scale).reshape(
            frames, 3, height, width
        )
    else:  # one field drifting slowly
        base = _smooth_field(rng, (2 * 3, height, width), scale).reshape(2, 3, height, width)
        g = np.linspace(0, 1, frames)[:, None, None, None]
        noise = (1 - g) * base[0] + g * base[1]
    x = rng.uniform(60, 196) + rng.uniform(15, 80) * noise.transpose(0, 2, 3, 1)
    return _to_uint8(x)


def _warped_image(rng: np.random.Generator, shape: _Shape, seed: int, index: int) -> np.ndarray:
    return _to_uint8(_warp(_image(rng, 2 * shape[1]), rng, shape))


def _moving_shapes(rng: np.random.Generator, shape: _Shape, seed: int, index: int) -> np.ndarray:
    frames, height, width = shape
    out = _warp(_image(rng, 2 * height), rng, shape)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) / height
    for _ in range(int(rng.integers(1, 5))):
        texture = _image(rng, 2 * height)[::2, ::2]
        start, stop = rng.uniform(0, 1, 2), rng.uniform(0, 1, 2)
        rx, ry = rng.uniform(0.08, 0.3, 2)
        ellipse = rng.random() < 0.5
        for t, g in enumerate(np.linspace(0.0, 1.0, frames)):
            cx, cy = (1 - g) * start + g * stop
            if ellipse:
                mask = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1
            else:
                mask = (np.abs(xx - cx) < rx) & (np.abs(yy - cy) < ry)
            out[t][mask] = texture[mask]
    return _to_uint8(out)


def _slideshow(rng: np.random.Generator, shape: _Shape, seed: int, index: int) -> np.ndarray:
    frames, height, width = shape
    parts = int(rng.integers(2, 5))
    cuts = np.sort(rng.choice(np.arange(1, frames), parts - 1, replace=False))
    out = np.empty((frames, height, width, 3), np.float64)
    for start, stop in zip([0, *cuts], [*cuts, frames], strict=True):
        out[start:stop] = _image(rng, 2 * height)[::2, ::2]
    return _to_uint8(out)


def _shuffled_frames(rng: np.random.Generator, shape: _Shape, seed: int, index: int) -> np.ndarray:
    frames, height, width = shape
    clip = SynthActions(seed=seed, frames=frames, height=height, width=width).clip(index)
    return clip[rng.permutation(frames)]


Renderer = Callable[[np.random.Generator, _Shape, int, int], np.ndarray]
_RENDERERS: Final[dict[str, Renderer]] = {
    "uniform_noise": _uniform_noise,
    "gaussian_noise": _gaussian_noise,
    "warped_image": _warped_image,
    "shuffled_frames": _shuffled_frames,
    "moving_shapes": _moving_shapes,
    "slideshow": _slideshow,
}
FAMILIES: Final = (
    "uniform_noise",
    "gaussian_noise",
    "warped_image",
    "moving_shapes",
    "shuffled_frames",
)
HELD_OUT: Final = ("slideshow",)


def render_family(family: str, *, seed: int, start: int, count: int) -> np.ndarray:
    """uint8 (count, T, H, W, 3) clips ``start..start+count`` of ``family`` at the encoder's
    input shape."""
    if family not in _RENDERERS:
        raise ValueError(f"unknown attack family {family!r}; known: {', '.join(_RENDERERS)}")
    shape = (ENCODER_SPEC.frames, ENCODER_SPEC.height, ENCODER_SPEC.width)
    render = _RENDERERS[family]
    return np.stack(
        [render(_clip_rng(seed, family, i), shape, seed, i) for i in range(start, start + count)]
    )
