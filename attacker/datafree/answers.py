"""Victim answers as the logits the data-free attack needs, and what it cannot work with."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from shared.schemas import OutputMode

__all__ = ["DataFreeError", "answer_logits", "check_output_mode"]


class DataFreeError(ValueError):
    """A data-free attack cannot run as configured; the message is one line."""


def check_output_mode(mode: OutputMode | str) -> OutputMode:
    """The data-free attack needs scores for every class; top-k and labels are refused."""
    mode = OutputMode(mode)
    if mode in (OutputMode.TOPK, OutputMode.LABEL):
        raise DataFreeError(
            f"the data-free generator needs the victim's probabilities or logits, but this key "
            f"answers {mode.value!r}: a forward difference of a {mode.value} answer is zero "
            "almost everywhere, so the generator gets no gradient; use a probs/logits key or a "
            "query source (e.g. stacked_affine) for this key"
        )
    return mode


def answer_logits(
    results: Sequence[dict[str, Any]], mode: OutputMode | str, num_classes: int, *, floor: float
) -> Tensor:
    """(N, C) float32 mean-centred logits: the victim's logits, or ``log(probs + floor)``
    (DFME's recovery; the floor keeps probabilities rounded to zero finite)."""
    mode = check_output_mode(mode)
    key = "logits" if mode is OutputMode.LOGITS else "probs"
    rows = []
    for i, result in enumerate(results):
        values = result.get(key)
        if values is None or len(values) != num_classes:
            raise DataFreeError(f"answer {i} has no {num_classes} {key}")
        rows.append(values)
    scores = torch.tensor(rows, dtype=torch.float64).view(-1, num_classes)
    if mode is OutputMode.PROBS:
        scores = torch.log(scores.clamp_min(0.0) + floor)
    return (scores - scores.mean(dim=1, keepdim=True)).to(torch.float32)
