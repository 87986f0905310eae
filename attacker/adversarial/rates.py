"""Success-rate definitions: how often a perturbation moves a correct answer off the true label."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class FlipRate:
    """Among ``eligible`` clips (answered correctly before the perturbation), ``flipped`` are
    answered with another label after it."""

    eligible: int
    flipped: int

    @property
    def rate(self) -> float | None:
        return self.flipped / self.eligible if self.eligible else None

    def to_dict(self) -> dict[str, Any]:
        rate = self.rate
        return {
            "eligible": self.eligible,
            "flipped": self.flipped,
            "rate": None if rate is None else round(rate, 4),
        }


def flip_rate(eligible: np.ndarray, true_labels: np.ndarray, after: np.ndarray) -> FlipRate:
    """``eligible`` (bool mask), the true labels and the answers to the perturbed clips."""
    mask = np.asarray(eligible, dtype=bool)
    return FlipRate(eligible=int(mask.sum()), flipped=int((mask & (after != true_labels)).sum()))


def ratio_vs_control(attack: FlipRate, control: FlipRate) -> dict[str, Any]:
    """``attack.rate / control.rate``. When the control flipped nothing the ratio is taken with
    one flip (a lower bound, marked ``control_floored``) rather than reported as infinite."""
    if attack.rate is None or control.eligible == 0:
        return {"ratio": None, "control_floored": False}
    floored = control.flipped == 0
    control_rate = max(control.flipped, 1) / control.eligible
    return {"ratio": round(attack.rate / control_rate, 3), "control_floored": floored}
