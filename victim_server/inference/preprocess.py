"""uint8 wire clips -> normalised float model input, resampled to the model's input spec."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from victim_server.models.config import InputSpec


def temporal_indices(source_frames: int, target_frames: int) -> np.ndarray:
    """Frame indices that sample ``target_frames`` uniformly from ``source_frames``.

    Fewer source frames than needed repeats frames (nearest), more skips them; equal is identity.
    """
    if source_frames == target_frames:
        return np.arange(target_frames)
    # The middle frame of each of ``target_frames`` equal segments.
    positions = np.floor((np.arange(target_frames) + 0.5) * source_frames / target_frames)
    return np.clip(positions, 0, source_frames - 1).astype(np.int64)


def clips_to_tensor(clips: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, T, H, W, 3) -> uint8 tensor, without copying a NumPy array that allows it."""
    if isinstance(clips, torch.Tensor):
        return clips
    array = np.asarray(clips)
    if not array.flags.writeable:  # torch warns on read-only buffers; one copy is cheap here
        array = array.copy()
    return torch.from_numpy(array)


def preprocess(
    clips: np.ndarray | torch.Tensor,
    spec: InputSpec,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 (N, T, H, W, 3) -> float (N, 3, T', H', W') at the spec's shape, mean and std."""
    x = clips_to_tensor(clips)
    if x.dtype != torch.uint8 or x.ndim != 5 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 clips (N, T, H, W, 3), got {x.dtype} {tuple(x.shape)}")
    n, t, h, w, _ = x.shape
    if t != spec.frames:
        x = x[:, torch.from_numpy(temporal_indices(t, spec.frames))]
    x = x.to(device=device, non_blocking=True)
    x = x.permute(0, 1, 4, 2, 3).to(dtype).div_(255.0)  # N T C H W
    if (h, w) != (spec.height, spec.width):
        frames = x.reshape(n * spec.frames, 3, h, w)
        frames = F.interpolate(
            frames,
            size=(spec.height, spec.width),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        x = frames.reshape(n, spec.frames, 3, spec.height, spec.width)
    mean = torch.tensor(spec.mean, device=x.device, dtype=dtype).view(1, 1, 3, 1, 1)
    std = torch.tensor(spec.std, device=x.device, dtype=dtype).view(1, 1, 3, 1, 1)
    x = (x - mean) / std
    return x.permute(0, 2, 1, 3, 4).contiguous()  # N C T H W
