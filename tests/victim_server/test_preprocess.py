"""Preprocessing resamples any T/H/W to the model's spec and normalises."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from victim_server.inference.preprocess import preprocess, temporal_indices
from victim_server.models.config import InputSpec

SPEC = InputSpec(frames=8, height=16, width=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def test_temporal_indices_cover_the_clip_uniformly() -> None:
    assert temporal_indices(8, 8).tolist() == list(range(8))
    assert temporal_indices(16, 4).tolist() == [2, 6, 10, 14]
    assert temporal_indices(2, 4).tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize("shape", [(2, 8, 16, 16, 3), (1, 30, 40, 24, 3), (3, 3, 8, 8, 3)])
def test_any_shape_comes_out_at_the_spec(shape: tuple[int, ...]) -> None:
    clips = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    x = preprocess(clips, SPEC)
    assert x.shape == (shape[0], 3, 8, 16, 16) and x.dtype == torch.float32


def test_normalisation_uses_mean_and_std() -> None:
    clips = np.full((1, 8, 16, 16, 3), 255, dtype=np.uint8)
    x = preprocess(clips, SPEC)
    assert torch.allclose(x, torch.full_like(x, 2.0))


def test_rejects_non_uint8() -> None:
    with pytest.raises(ValueError, match="uint8"):
        preprocess(np.zeros((1, 8, 16, 16, 3), np.float32), SPEC)


def _reference(clips: np.ndarray, spec: InputSpec) -> torch.Tensor:
    """The definition, step by step: sample frames, scale to [0, 1], resize, normalise."""
    x = torch.from_numpy(clips)[:, torch.from_numpy(temporal_indices(clips.shape[1], spec.frames))]
    n = x.shape[0]
    frames = x.reshape(n * spec.frames, *x.shape[2:]).permute(0, 3, 1, 2).double() / 255.0
    frames = torch.nn.functional.interpolate(
        frames, size=(spec.height, spec.width), mode="bilinear", antialias=True
    )
    mean = torch.tensor(spec.mean, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float64).view(1, 3, 1, 1)
    frames = (frames - mean) / std
    return frames.reshape(n, spec.frames, 3, spec.height, spec.width).permute(0, 2, 1, 3, 4)


@pytest.mark.parametrize("shape", [(3, 8, 16, 16, 3), (2, 12, 20, 28, 3)])
def test_matches_the_definition_per_channel(shape: tuple[int, ...]) -> None:
    """Each channel gets its own mean and std (a swapped axis would mix them up), at the
    spec's size (no resize) and off it (resized)."""
    spec = InputSpec(frames=8, height=16, width=16, mean=(0.1, 0.5, 0.9), std=(0.2, 0.3, 0.4))
    clips = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    x = preprocess(clips, spec)
    assert x.is_contiguous()
    assert torch.allclose(x.double(), _reference(clips, spec), atol=1e-5)
