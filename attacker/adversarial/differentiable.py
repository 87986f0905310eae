"""A student as a differentiable classifier of float clips in uint8 range (N, T, H, W, 3)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from attacker.students import StudentModel, student_config
from attacker.students.preprocess import segment_middle_indices

#: float clips (N, T, H, W, 3) with values in [0, 255] -> logits (N, num_classes), differentiable.
LogitsFn = Callable[[torch.Tensor], torch.Tensor]


def student_logits_fn(model: StudentModel) -> LogitsFn:
    """``model``'s logits through the same steps as ``student_preprocess`` (frame sampling,
    antialiased bilinear resize, [0, 1], mean/std), on float input so gradients reach the
    pixels. On whole-valued input it equals ``predict`` (tested)."""
    prep = student_config(model).preprocessing
    model.eval()
    mean = torch.tensor(prep.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(prep.std, dtype=torch.float32).view(1, 3, 1, 1)

    def logits(clips: torch.Tensor) -> torch.Tensor:
        if clips.ndim != 5 or clips.shape[-1] != 3:
            raise ValueError(f"clips must be shaped (N, T, H, W, 3), got {tuple(clips.shape)}")
        n, t, h, w, _ = clips.shape
        if t != prep.frames:
            clips = clips.index_select(1, segment_middle_indices(t, prep.frames))
        frames = clips.reshape(n * prep.frames, h, w, 3).permute(0, 3, 1, 2) / 255.0
        if (h, w) != (prep.height, prep.width):
            frames = F.interpolate(
                frames,
                size=(prep.height, prep.width),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
        x = ((frames - mean) / std).reshape(n, prep.frames, 3, prep.height, prep.width)
        out: torch.Tensor = model(x.permute(0, 2, 1, 3, 4).contiguous())  # N C T H W
        return out.float()

    return logits
