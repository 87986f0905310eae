"""The clip embedding PRADA measures distances in: seven "naturalness" statistics.

Raw-pixel L2 between video clips is costly and, on this kind of data, points the wrong way:
independent random clips (noise, procedural textures) have minimum distances that are *more*
normal than those of natural clips (measured: Shapiro-Wilk W 0.98-0.99 for noise streams vs
0.92-0.96 for benign SynthActions streams in pixel, random-projection and penultimate-feature
spaces), so the test cannot separate them. This embedding instead describes how a clip moves
and looks, with statistics whose benign range is known:

1. static fraction: share of pixels whose grey level barely changes over the clip;
2. motion energy: mean absolute frame-to-frame difference;
3. horizontal and 4. vertical gradient energy;
5. colourfulness: mean (max - min) over RGB;
6. temporal coherence: mean correlation of consecutive (mean-removed) frames;
7. fine detail: mean absolute Laplacian.

Each statistic is scaled to the [0.5, 99.5] percentile range measured on benign calibration
clips, clipped to [0, 1] and quantised to ``levels`` steps. Natural clips spread over the
range; clips far outside it (noise, say) collapse onto the range's corners, so a synthetic
stream looks to PRADA like a run of near-duplicates -- the signature the test was built for.
Clips are first reduced to at most 16 x 32 x 32, so the cost per clip is bounded whatever the
input size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["STATISTICS", "NaturalnessEmbedding", "clip_statistics", "reduce_clips"]

STATISTICS = ("static", "motion", "grad_x", "grad_y", "colourfulness", "coherence", "detail")
_MAX_SHAPE = (16, 32, 32)
_STATIC_LEVEL = 0.02


def reduce_clips(clips: np.ndarray) -> np.ndarray:
    """uint8 (N, T, H, W, 3) -> float32 in [0, 1], at most 16 x 32 x 32 (frame sampling and
    box averaging), so statistics cost the same for any input size."""
    n, t, h, w, _ = clips.shape
    if t > _MAX_SHAPE[0]:
        clips = clips[:, np.linspace(0, t - 1, _MAX_SHAPE[0]).round().astype(int)]
    x = clips.astype(np.float32) / 255.0
    fh, fw = max(1, h // _MAX_SHAPE[1]), max(1, w // _MAX_SHAPE[2])
    if fh > 1 or fw > 1:
        hh, ww = (h // fh) * fh, (w // fw) * fw
        x = x[:, :, :hh, :ww].reshape(n, x.shape[1], hh // fh, fh, ww // fw, fw, 3).mean((3, 5))
    return x


def clip_statistics(clips: np.ndarray) -> np.ndarray:
    """(N, 7) float32 statistics of uint8 clips (N, T, H, W, 3), in the order of STATISTICS."""
    x = reduce_clips(clips)
    grey = x.mean(-1)  # N T H W
    static = (grey.std(axis=1) < _STATIC_LEVEL).mean(axis=(1, 2))
    motion = np.abs(np.diff(grey, axis=1)).mean(axis=(1, 2, 3))
    grad_x = np.abs(np.diff(grey, axis=3)).mean(axis=(1, 2, 3))
    grad_y = np.abs(np.diff(grey, axis=2)).mean(axis=(1, 2, 3))
    colourful = (x.max(-1) - x.min(-1)).mean(axis=(1, 2, 3))
    centred = grey - grey.mean(axis=(2, 3), keepdims=True)
    a, b = centred[:, 1:], centred[:, :-1]
    corr = (a * b).mean(axis=(2, 3)) / (
        np.sqrt((a * a).mean(axis=(2, 3)) * (b * b).mean(axis=(2, 3))) + 1e-6
    )
    coherence = corr.mean(axis=1)
    inner = grey[:, :, 1:-1, 1:-1]
    laplacian = np.abs(
        4 * inner
        - grey[:, :, 2:, 1:-1]
        - grey[:, :, :-2, 1:-1]
        - grey[:, :, 1:-1, 2:]
        - grey[:, :, 1:-1, :-2]
    ).mean(axis=(1, 2, 3))
    return np.stack([static, motion, grad_x, grad_y, colourful, coherence, laplacian], axis=1)


@dataclass(frozen=True)
class NaturalnessEmbedding:
    """Statistics scaled to a benign range, clipped and quantised (see the module docstring)."""

    low: tuple[float, ...]
    high: tuple[float, ...]
    levels: int = 20

    @property
    def dim(self) -> int:
        return len(STATISTICS)

    @classmethod
    def fit(cls, benign_clips: np.ndarray, *, levels: int = 20) -> NaturalnessEmbedding:
        stats = clip_statistics(benign_clips)
        low = np.percentile(stats, 0.5, axis=0)
        high = np.percentile(stats, 99.5, axis=0)
        return cls(
            low=tuple(float(v) for v in low), high=tuple(float(v) for v in high), levels=levels
        )

    def __call__(self, clips: np.ndarray) -> np.ndarray:
        low, high = np.asarray(self.low), np.asarray(self.high)
        scaled = (clip_statistics(clips) - low) / np.maximum(high - low, 1e-9)
        return (np.round(np.clip(scaled, 0.0, 1.0) * self.levels) / self.levels).astype(np.float32)

    def to_json(self) -> str:
        return json.dumps(
            {
                "embedding": "naturalness",
                "statistics": list(STATISTICS),
                "low": list(self.low),
                "high": list(self.high),
                "levels": self.levels,
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> NaturalnessEmbedding:
        data = json.loads(text)
        if data.get("statistics") != list(STATISTICS):
            raise ValueError("calibration file is for other statistics")
        return cls(low=tuple(data["low"]), high=tuple(data["high"]), levels=int(data["levels"]))

    @classmethod
    def load(cls, path: Path) -> NaturalnessEmbedding:
        return cls.from_json(path.read_text())
