"""SynthActions: a procedural, seeded action-video data set whose classes are motions."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from shared.synthactions.motions import CLASS_NAMES, MotionContext, draw_trajectory
from shared.synthactions.render import (
    SHAPE_NAMES,
    TEXTURES,
    draw_background,
    draw_object_colours,
    render_clip,
)

__all__ = ["DEFAULT_FRAMES", "DEFAULT_SIZE", "NUM_CLASSES", "SynthActions"]

# The embedded victim's clip shape: small enough that the whole range runs on 2 CPU cores.
DEFAULT_FRAMES = 16
DEFAULT_SIZE = 32
NUM_CLASSES = len(CLASS_NAMES)

# Independent random streams per purpose, so a clip depends only on (seed, index).
_LABEL_STREAM = 1
_CLIP_STREAM = 2


@dataclass(frozen=True)
class SynthActions:
    """An indexable, infinite, deterministic set of labelled clips.

    Clip ``i`` of seed ``s`` is the same on every machine and in any order of generation. Labels
    are balanced exactly within each block of ``NUM_CLASSES`` consecutive indices.

    ``difficulty`` in [0, 1] scales the nuisance factors (background texture contrast, sensor
    noise, distractor objects, small objects); 1.0 is the data set's standard distribution and the
    one every evaluation uses. Lower values exist for curricula.
    """

    seed: int
    frames: int = DEFAULT_FRAMES
    height: int = DEFAULT_SIZE
    width: int = DEFAULT_SIZE
    difficulty: float = 1.0

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ValueError(f"seed must be non-negative, got {self.seed}")
        if self.frames < 4 or min(self.height, self.width) < 8:
            raise ValueError("SynthActions needs at least 4 frames of 8x8 pixels")
        if not 0.0 <= self.difficulty <= 1.0:
            raise ValueError(f"difficulty must be in [0, 1], got {self.difficulty}")

    @property
    def class_names(self) -> tuple[str, ...]:
        return CLASS_NAMES

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        return (self.frames, self.height, self.width, 3)

    def label(self, index: int) -> int:
        block, position = divmod(index, NUM_CLASSES)
        order = np.random.default_rng([self.seed, _LABEL_STREAM, block]).permutation(NUM_CLASSES)
        return int(order[position])

    def labels(self, start: int, count: int) -> np.ndarray:
        return np.array([self.label(i) for i in range(start, start + count)], dtype=np.int64)

    def clip(self, index: int) -> np.ndarray:
        """uint8 (T, H, W, 3) clip number ``index``."""
        if index < 0:
            raise IndexError(f"clip index must be non-negative, got {index}")
        return self._render(index, self.label(index))

    def batch(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Clips ``start .. start+count-1`` as (N, T, H, W, 3) uint8 and their labels (N,)."""
        labels = self.labels(start, count)
        clips = np.empty((count, *self.clip_shape), dtype=np.uint8)
        for offset, label in enumerate(labels):
            clips[offset] = self._render(start + offset, int(label))
        return clips, labels

    def iter_batches(
        self, batch_size: int, *, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        index = start
        while stop is None or index < stop:
            count = batch_size if stop is None else min(batch_size, stop - index)
            yield self.batch(index, count)
            index += count

    def _render(self, index: int, label: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, _CLIP_STREAM, index])
        d = self.difficulty
        size = float(min(self.height, self.width))
        background = draw_background(
            rng, self.height, self.width, contrast=rng.uniform(0.0, 0.15 + 0.6 * d)
        )
        main, marker = draw_object_colours(
            rng, background.mean(axis=(0, 1)), min_contrast=0.55 - 0.25 * d
        )
        if rng.uniform() < 0.5 * d:
            background = self._with_distractor(rng, background, size)
        radius = rng.uniform(0.22 - 0.07 * d, 0.26) * size
        centre = (
            self.width / 2 + rng.uniform(-0.08, 0.08) * size,
            self.height / 2 + rng.uniform(-0.08, 0.08) * size,
        )
        ctx = MotionContext(
            rng=rng,
            tau=np.linspace(0.0, 1.0, self.frames),
            size=size,
            centre=centre,
            angle0=rng.uniform(0, 2 * np.pi),
            scale0=rng.uniform(0.85, 1.15),
        )
        trajectory = draw_trajectory(label, ctx)
        return render_clip(
            rng=rng,
            trajectory=trajectory,
            background=background,
            radius=radius,
            shape=SHAPE_NAMES[int(rng.integers(len(SHAPE_NAMES)))],
            main=main,
            marker=marker,
            texture=int(rng.integers(TEXTURES)),
            noise_std=rng.uniform(0.0, 0.03 * d),
        )

    def _with_distractor(
        self, rng: np.random.Generator, background: np.ndarray, size: float
    ) -> np.ndarray:
        """Paint a static second object into the background (it never moves, in any class)."""
        from shared.synthactions.motions import Trajectory

        still = Trajectory(
            x=np.array([rng.uniform(0.1, 0.9) * self.width]),
            y=np.array([rng.uniform(0.1, 0.9) * self.height]),
            angle=np.array([rng.uniform(0, 2 * np.pi)]),
            scale=np.array([1.0]),
            visible=np.array([1.0]),
        )
        main, marker = draw_object_colours(rng, background.mean(axis=(0, 1)), min_contrast=0.3)
        frame = render_clip(
            rng=rng,
            trajectory=still,
            background=background,
            radius=rng.uniform(0.08, 0.14) * size,
            shape=SHAPE_NAMES[int(rng.integers(len(SHAPE_NAMES)))],
            main=main,
            marker=marker,
            texture=int(rng.integers(TEXTURES)),
            noise_std=0.0,
        )
        return frame[0].astype(np.float64) / 255.0
