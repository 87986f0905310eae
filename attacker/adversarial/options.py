"""What PGD crafts: radius, steps, step size and perturbation model (all in pixel units)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal, cast

#: ``per-frame``: an independent perturbation for every frame; ``shared``: one perturbation
#: (H, W, 3) added to every frame of the clip.
Perturbation = Literal["per-frame", "shared"]
PERTURBATIONS: Final[tuple[str, ...]] = ("per-frame", "shared")


@dataclass(frozen=True)
class PGDOptions:
    """L-inf PGD in pixel space. ``eps`` and ``step_size`` are in pixel units of the uint8 scale
    0..255 (``eps=8`` is 8/255 of the range). Clips are uint8, so the crafted perturbation is
    rounded to whole pixel values within ``floor(eps)`` (the effective radius)."""

    eps: float
    steps: int = 10
    step_size: float | None = None  # default 2.5 * eps / steps (Madry et al.)
    perturbation: Perturbation = "per-frame"
    random_start: bool = False
    # MI-FGSM (Dong et al., 2018): steps follow the sign of a running sum of L1-normalised
    # gradients decayed by ``momentum``; 0 is plain PGD.
    momentum: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.eps) and 1 <= self.eps <= 255):
            raise ValueError(f"eps must be in 1..255 pixel units (8 = 8/255), got {self.eps}")
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.step_size is not None and not (
            math.isfinite(self.step_size) and self.step_size > 0
        ):
            raise ValueError(f"step size must be positive (pixel units), got {self.step_size}")
        if not (math.isfinite(self.momentum) and 0 <= self.momentum <= 10):
            raise ValueError(f"momentum must be in 0..10, got {self.momentum}")
        if self.perturbation not in PERTURBATIONS:
            raise ValueError(
                f"perturbation must be one of {', '.join(PERTURBATIONS)}, got {self.perturbation!r}"
            )

    @property
    def step(self) -> float:
        """The step size actually used, in pixel units."""
        return self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "step_size": self.step, "eps_fraction": self.eps / 255.0}


def perturbation_of(value: str) -> Perturbation:
    """A user's string as a :data:`Perturbation` (one-line ValueError otherwise)."""
    if value not in PERTURBATIONS:
        raise ValueError(f"perturbation must be one of {', '.join(PERTURBATIONS)}, got {value!r}")
    return cast(Perturbation, value)
