"""Stacked-affine clips: one still image moved, rotated and zoomed over time.

Clip ``i`` of seed ``s`` picks an image (a file from the folder, or a procedural texture) and a
trajectory from a generator seeded by ``(s, i)``. The trajectory goes in the recipe, and frames
are rendered from the recipe alone, so :func:`render_affine` is both the generator and the
re-creator.

Geometry: pixel centres are measured from the frame centre, in frame pixels. At time ``g`` in
[0, 1] (the motion profile of frame ``t``) the image is scaled by ``zoom(g)``, rotated by
``angle(g)`` (positive is clockwise on screen, as the y axis points down) and translated by
``shift(g) * (W, H)``; each output pixel ``p`` is inverse-mapped to image coordinates
``R(-angle) (p - shift) / zoom`` and sampled bilinearly. At zoom 1 the image exactly covers the
frame; it is held at twice the frame's resolution so zooming in stays sharp.

Recipe: ``{"source": "stacked_affine", "seed", "index", "shape", "border", "image": {"path":
<absolute path>} | {"texture": <pattern name>, "seed", "index"}, "motion": {"profile": "linear"
| "pingpong", "cycles", "shift0": [x, y], "shift1": [x, y], "angle0_deg", "angle1_deg",
"zoom0", "zoom1"}}``. ``linear`` moves from the 0-values to the 1-values;
``pingpong`` goes there and back ``cycles`` times with a cosine profile.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, Literal, cast

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import Field, field_validator

from attacker.sources._base import (
    RECIPE_VERSION,
    ClipShape,
    QueryClip,
    SourceConfigBase,
    SourceError,
    clip_rng,
    finish_clip,
    to_uint8,
)
from attacker.sources._resample import Border, sample_bilinear
from attacker.sources.registry import RecipeFactors, register_source
from attacker.sources.sprites import SPRITE_FACTORS, render_layered, sample_layered, sprite_factors
from attacker.sources.textures import PATTERNS, draw_texture

__all__ = [
    "AFFINE_FACTORS",
    "IMAGE_EXTENSIONS",
    "StackedAffineConfig",
    "StackedAffineSource",
    "list_images",
    "render_affine",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: Final = frozenset({".jpg", ".jpeg", ".png"})
_MOTION_STREAM: Final = 21
_TEXTURE_STREAM: Final = 22
_PATTERN_STREAM: Final = 23
_LAYERED_STREAM: Final = 24
_SUPERSAMPLE: Final = 2
_IMAGE_CACHE_SIZE: Final = 64
PATTERN_NAMES: Final = tuple(PATTERNS)


class StackedAffineConfig(SourceConfigBase):
    """Clips made by moving, rotating and zooming one still image over time.

    ``images`` is a folder of .jpg/.jpeg/.png files (searched recursively); ``None`` uses
    procedural textures (gratings, checkerboards, blobs, shapes, colour noise, rings).
    ``max_shift`` bounds the translation as a fraction of the frame size, ``max_rotation_deg`` the
    rotation over the clip, ``zoom_range`` the scale factors. ``oscillation`` is the probability
    that a clip moves back and forth (a cosine profile) instead of in a straight line. Outside the
    image the content is mirrored (``reflect``), tiled (``wrap``) or black (``black``).
    ``layered`` is the probability that a clip is instead a layered scene: one or two textured
    sprites with their own affine trajectories over a still background.
    """

    kind: Literal["stacked_affine"] = "stacked_affine"
    images: Path | None = None
    max_shift: float = Field(0.3, ge=0.0, le=2.0)
    max_rotation_deg: float = Field(90.0, ge=0.0, le=360.0)
    zoom_range: tuple[float, float] = (0.7, 1.4)
    oscillation: float = Field(0.25, ge=0.0, le=1.0)
    border: Literal["reflect", "wrap", "black"] = "reflect"
    # Probability that a clip is layered: textured sprites moving over a still background
    # (see attacker/sources/sprites.py) instead of one whole-frame warp.
    layered: float = Field(0.0, ge=0.0, le=1.0)

    @field_validator("zoom_range")
    @classmethod
    def _zoom_ok(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0.05 <= low <= high <= 20.0:
            raise ValueError("zoom_range must be (low, high) with 0.05 <= low <= high <= 20")
        return value


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted by relative path."""
    if not folder.is_dir():
        raise SourceError(f"stacked_affine: image folder {str(folder)!r} does not exist")
    files = sorted(
        (p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()),
        key=lambda p: p.relative_to(folder).as_posix(),
    )
    if not files:
        raise SourceError(
            f"stacked_affine: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) "
            f"under {str(folder)!r}"
        )
    return [p.resolve() for p in files]


def render_affine(recipe: dict[str, Any], shape: ClipShape) -> np.ndarray:
    """The clip a stacked-affine recipe describes."""
    if "layered" in recipe:
        return render_layered(recipe["layered"], shape, index=int(recipe["index"]))
    image = _image_for(recipe["image"], shape)
    motion = recipe["motion"]
    frames, height, width = shape.frames, shape.height, shape.width
    g = motion_profile(motion, frames)
    (sx0, sy0), (sx1, sy1) = motion["shift0"], motion["shift1"]
    tx = (sx0 + (sx1 - sx0) * g) * width
    ty = (sy0 + (sy1 - sy0) * g) * height
    angle = np.radians(motion["angle0_deg"] + (motion["angle1_deg"] - motion["angle0_deg"]) * g)
    zoom0, zoom1 = float(motion["zoom0"]), float(motion["zoom1"])
    zoom = zoom0 * (zoom1 / zoom0) ** g
    cos = (np.cos(angle) / zoom)[:, None, None]
    sin = (np.sin(angle) / zoom)[:, None, None]
    dx = (np.arange(width) + 0.5 - width / 2.0)[None, None, :] - tx[:, None, None]  # (T, 1, W)
    dy = (np.arange(height) + 0.5 - height / 2.0)[None, :, None] - ty[:, None, None]  # (T, H, 1)
    image_x = cos * dx + sin * dy  # (T, H, W), frame pixels from the image centre
    image_y = cos * dy - sin * dx
    scale_y, scale_x = image.shape[0] / height, image.shape[1] / width
    us = (image_x + width / 2.0) * scale_x - 0.5
    vs = (image_y + height / 2.0) * scale_y - 0.5
    border = cast(Border, recipe.get("border", "reflect"))
    return finish_clip(to_uint8(sample_bilinear(image, vs, us, border=border)), shape)


#: The motion factors a stacked-affine recipe names (see :func:`affine_factors`).
AFFINE_FACTORS: Final = {
    "layered": 2,
    "camera_pingpong": 2,
    "camera_zooms_in": 2,
    "camera_turns_clockwise": 2,
    "camera_moves_right": 2,
    "camera_moves_down": 2,
    **SPRITE_FACTORS,
}


def affine_factors(recipe: dict[str, Any]) -> dict[str, int]:
    """Whether the clip is a layered scene and, if so, its first sprite's factors; else the
    whole-frame motion's profile and the directions of its zoom, turn and shift."""
    if "layered" in recipe:
        return {"layered": 1, **sprite_factors(recipe["layered"])}
    motion = recipe["motion"]
    return {
        "layered": 0,
        "camera_pingpong": int(motion["profile"] == "pingpong"),
        "camera_zooms_in": int(motion["zoom1"] > motion["zoom0"]),
        "camera_turns_clockwise": int(motion["angle1_deg"] > motion["angle0_deg"]),
        "camera_moves_right": int(motion["shift1"][0] > motion["shift0"][0]),
        "camera_moves_down": int(motion["shift1"][1] > motion["shift0"][1]),
    }


@register_source(
    "stacked_affine",
    config=StackedAffineConfig,
    render=render_affine,
    factors=RecipeFactors(classes=lambda config: dict(AFFINE_FACTORS), of=affine_factors),
)
class StackedAffineSource:
    """An infinite stream of stacked-affine clips (see :class:`StackedAffineConfig`)."""

    def __init__(self, config: StackedAffineConfig, *, shape: ClipShape, seed: int) -> None:
        self.name = "stacked_affine"
        self.config = config
        self.shape = shape
        self.seed = seed
        self.images = list_images(config.images) if config.images is not None else None

    def recipe(self, index: int) -> dict[str, Any]:
        """The recipe of clip ``index``: which image, and its sampled trajectory."""
        rng = clip_rng(self.seed, _MOTION_STREAM, index)
        image: dict[str, Any]
        if self.images is None:
            pick = clip_rng(self.seed, _PATTERN_STREAM, index).integers(len(PATTERN_NAMES))
            pattern = PATTERN_NAMES[int(pick)]
            image = {"texture": pattern, "seed": self.seed, "index": index}
        else:
            image = {"path": str(self.images[int(rng.integers(len(self.images)))])}
        recipe = {
            "v": RECIPE_VERSION,
            "source": "stacked_affine",
            "seed": self.seed,
            "index": index,
            "shape": self.shape.as_list(),
            "border": self.config.border,
            "image": image,
            "motion": sample_motion(rng, self.config),
        }
        if self.config.layered > 0 and rng.uniform() < self.config.layered:
            recipe["layered"] = sample_layered(
                clip_rng(self.seed, _LAYERED_STREAM, index), seed=self.seed, index=index
            )
        return recipe

    def __iter__(self) -> Iterator[QueryClip]:
        unreadable: set[str] = set()
        index = 0
        while True:
            recipe = self.recipe(index)
            path = recipe["image"].get("path")
            index += 1
            if path in unreadable:
                continue
            try:
                clip = render_affine(recipe, self.shape)
            except SourceError as exc:  # an unreadable image: skip it (deterministically)
                if path is None:
                    raise
                logger.warning("%s (skipping this image)", exc)
                unreadable.add(path)
                if self.images is not None and len(unreadable) == len(self.images):
                    raise SourceError("stacked_affine: none of the images is readable") from None
                continue
            yield QueryClip(clip=clip, recipe=recipe)


def sample_motion(rng: np.random.Generator, config: StackedAffineConfig) -> dict[str, Any]:
    """A random trajectory within the config's bounds (JSON-ready floats)."""
    shift = config.max_shift
    half_angle = config.max_rotation_deg / 2.0
    log_low, log_high = (math.log(z) for z in config.zoom_range)
    pingpong = bool(rng.uniform() < config.oscillation)
    values = {
        "profile": "pingpong" if pingpong else "linear",
        "cycles": float(rng.uniform(0.5, 2.0)) if pingpong else 1.0,
        "shift0": [float(v) for v in rng.uniform(-shift, shift, size=2)],
        "shift1": [float(v) for v in rng.uniform(-shift, shift, size=2)],
        "angle0_deg": float(rng.uniform(-half_angle, half_angle)),
        "angle1_deg": float(rng.uniform(-half_angle, half_angle)),
        "zoom0": float(math.exp(rng.uniform(log_low, log_high))),
        "zoom1": float(math.exp(rng.uniform(log_low, log_high))),
    }
    return values


def motion_profile(motion: dict[str, Any], frames: int) -> np.ndarray:
    """``g(t)`` in [0, 1] for each frame: linear ramp, or cosine there-and-back."""
    tau = np.arange(frames, dtype=np.float64) / max(frames - 1, 1)
    if motion["profile"] == "linear":
        return tau
    if motion["profile"] == "pingpong":
        return 0.5 * (1.0 - np.cos(2.0 * math.pi * float(motion["cycles"]) * tau))
    raise SourceError(f"stacked_affine: unknown motion profile {motion['profile']!r}")


def _image_for(spec: dict[str, Any], shape: ClipShape) -> np.ndarray:
    if "path" in spec:
        path = Path(spec["path"])
        try:
            stat = path.stat()
        except OSError as exc:
            raise SourceError(f"stacked_affine: cannot read image {str(path)!r}: {exc}") from None
        return _load_image(str(path), stat.st_mtime_ns, stat.st_size, shape)
    if "texture" in spec:
        rng = clip_rng(int(spec["seed"]), _TEXTURE_STREAM, int(spec["index"]))
        try:
            return draw_texture(
                rng,
                _SUPERSAMPLE * shape.height,
                _SUPERSAMPLE * shape.width,
                pattern=str(spec["texture"]),
            )
        except ValueError as exc:
            raise SourceError(f"stacked_affine: {exc}") from None
    raise SourceError(f"stacked_affine: recipe image needs 'path' or 'texture', got {spec}")


@functools.lru_cache(maxsize=_IMAGE_CACHE_SIZE)
def _load_image(path: str, mtime_ns: int, size: int, shape: ClipShape) -> np.ndarray:
    """An image file as float32 RGB, centre-cropped to the frame's aspect and resized to twice
    the frame size (cached by path, modification time and size)."""
    del mtime_ns, size  # cache keys only: a changed file is read again
    height, width = _SUPERSAMPLE * shape.height, _SUPERSAMPLE * shape.width
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
            scale = max(height / image.height, width / image.width)
            crop_w, crop_h = width / scale, height / scale
            left, top = (image.width - crop_w) / 2.0, (image.height - crop_h) / 2.0
            resized = image.resize(
                (width, height),
                Image.Resampling.BILINEAR,
                box=(left, top, left + crop_w, top + crop_h),
                reducing_gap=3.0,
            )
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise SourceError(f"stacked_affine: cannot read image {path!r}: {exc}") from None
    array = np.asarray(resized, dtype=np.float32)
    array.flags.writeable = False
    return array
