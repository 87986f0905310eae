"""Zeroth-order gradient estimates from forward differences on the uint8 pixel lattice.

The victim sees uint8 clips, so a probe cannot move a pixel by less than one level. Each probe
is the clip plus ``step`` levels times a Rademacher sign per pixel (clipped to [0, 255]); the
perturbation actually sent, ``delta``, is known exactly. With ``E[delta delta^T] ~ h^2 I``
(``h`` the step in the clip's units), the forward-difference estimate

    g = (1 / m) * sum_j (f(x + delta_j) - f(x)) * delta_j / h^2

is an estimate of ``grad f(x)`` (unbiased for a linear ``f`` away from the clipping bounds).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["forward_difference_gradient", "lattice_probes"]


def lattice_probes(
    base: Tensor, *, directions: int, step: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Probes around uint8 clips ``base`` (B, ...).

    Returns ``probes`` uint8 (B, m, ...) and ``deltas`` float32 (B, m, ...): ``probes - base``
    in [0, 1] pixel units (``levels / 255``).
    """
    if base.dtype != torch.uint8:
        raise TypeError(f"probes are taken around uint8 clips, got {base.dtype}")
    if directions < 1 or step < 1:
        raise ValueError(f"need directions >= 1 and step >= 1, got {directions} and {step}")
    shape = (base.shape[0], directions, *base.shape[1:])
    signs = torch.randint(0, 2, shape, generator=generator, dtype=torch.int16).mul_(2).sub_(1)
    origin = base.unsqueeze(1).to(torch.int16)
    probes = (origin + step * signs).clamp_(0, 255)
    deltas = (probes - origin).to(torch.float32).div_(255.0)
    return probes.to(torch.uint8), deltas


def forward_difference_gradient(
    f_base: Tensor, f_probes: Tensor, deltas: Tensor, *, step: float
) -> Tensor:
    """The estimate of ``grad f`` at each base point (B, ...).

    ``f_base`` (B,): f at the base points; ``f_probes`` (B, m): f at ``base + deltas[:, j]``;
    ``deltas`` (B, m, ...); ``step``: the nominal step ``h`` in the units of ``deltas``.
    """
    if f_probes.shape != deltas.shape[:2] or f_base.shape != deltas.shape[:1]:
        raise ValueError(
            f"shapes disagree: f_base {tuple(f_base.shape)}, f_probes {tuple(f_probes.shape)}, "
            f"deltas {tuple(deltas.shape)}"
        )
    differences = (f_probes - f_base.unsqueeze(1)).to(deltas.dtype)  # B m
    weights = differences.view(*differences.shape, *([1] * (deltas.ndim - 2)))
    return (weights * deltas).mean(dim=1) / (step * step)
