"""The current student's view of a candidate pool: logits and pooled features."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from attacker.students import StudentModel, student_preprocess
from attacker.train.loop import autocast_dtype


@dataclass(frozen=True)
class PoolScores:
    logits: np.ndarray  # (N, classes) float32
    features: np.ndarray  # (N, F) float32, the backbone's pooled features

    def probabilities(self) -> np.ndarray:
        shifted = self.logits - self.logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        probs: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
        return probs


@torch.inference_mode()
def score_pool(
    model: StudentModel,
    clips: np.ndarray | Sequence[np.ndarray],
    *,
    precision: str = "auto",
    batch_size: int = 256,
) -> PoolScores:
    """Run the student over ``clips`` in eval mode: a uint8 batch (N x T x H x W x 3), or a
    sequence of clips (T x H x W x 3) stacked one batch at a time, so that a pool of tens of
    thousands of candidates is never copied whole (at 8 candidates per query that copy was
    0.5 GB a round, at 32 2 GB)."""
    model.eval()
    prep = model.student_config.preprocessing
    dtype = autocast_dtype(precision, torch.device("cpu"))
    logits, features = [], []
    for start in range(0, len(clips), batch_size):
        part = clips[start : start + batch_size]
        x = student_preprocess(part if isinstance(part, np.ndarray) else np.stack(part), prep)
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            f = model.forward_features(x)
            y = model.forward_head(f)
        features.append(f.float().numpy())
        logits.append(y.float().numpy())
    classes = model.num_classes
    return PoolScores(
        logits=np.concatenate(logits) if logits else np.empty((0, classes), np.float32),
        features=np.concatenate(features) if features else np.empty((0, 0), np.float32),
    )
