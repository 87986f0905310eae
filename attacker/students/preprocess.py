"""uint8 clips (N, T, H, W, 3) -> normalised float student input (N, 3, T', H', W')."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from attacker.students.config import StudentPreprocessing


def segment_middle_indices(num_frames: int, target: int) -> torch.Tensor:
    """Index of the middle frame of each of ``target`` equal segments of ``num_frames`` frames.

    With ``target > num_frames`` frames repeat (nearest-neighbour in time).
    """
    if num_frames < 1 or target < 1:
        raise ValueError(f"need at least one frame, got T={num_frames} -> {target}")
    positions = (torch.arange(target, dtype=torch.float64) + 0.5) * (num_frames / target)
    return positions.floor().long().clamp_(0, num_frames - 1)


def student_preprocess(
    clips_uint8: torch.Tensor | np.ndarray, prep: StudentPreprocessing
) -> torch.Tensor:
    """Sample ``prep.frames`` frames, resize to ``prep.height`` x ``prep.width``, normalise.

    Temporal: the middle frame of ``prep.frames`` equal segments. Spatial: bilinear with
    antialiasing (so downsizing does not alias). Pixels go to [0, 1], then ``(x - mean) / std``.
    Returns float32 (N, 3, T', H', W') on the input's device.
    """
    clips = (
        torch.from_numpy(np.ascontiguousarray(clips_uint8))
        if isinstance(clips_uint8, np.ndarray)
        else clips_uint8
    )
    if clips.dtype != torch.uint8:
        raise TypeError(f"clips must be uint8, got {clips.dtype}")
    if clips.ndim != 5 or clips.shape[-1] != 3:
        raise ValueError(f"clips must be shaped (N, T, H, W, 3), got {tuple(clips.shape)}")
    n, t, h, w, _ = clips.shape
    if n == 0:
        return torch.empty((0, 3, *prep.size), dtype=torch.float32, device=clips.device)
    if min(t, h, w) < 1:
        raise ValueError(f"clips must have at least one frame and pixel, got {tuple(clips.shape)}")

    if t != prep.frames:
        index = segment_middle_indices(t, prep.frames).to(clips.device)
        clips = clips.index_select(1, index)  # N T' H W C
    frames = clips.reshape(n * prep.frames, h, w, 3).permute(0, 3, 1, 2)  # N*T' C H W
    x = frames.float().div_(255.0)
    if (h, w) != (prep.height, prep.width):
        x = F.interpolate(
            x, size=(prep.height, prep.width), mode="bilinear", align_corners=False, antialias=True
        )
    mean = torch.tensor(prep.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(prep.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    x = (x - mean) / std
    x = x.reshape(n, prep.frames, 3, prep.height, prep.width)  # N T' C H' W'
    return x.permute(0, 2, 1, 3, 4).contiguous()  # N C T' H' W'
