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
