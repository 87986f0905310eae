"""L-inf PGD (Madry et al., 2018) on uint8 clips, and its control: random sign noise.

Both work in pixel units of 0..255 on clips (N, T, H, W, 3). The perturbation model decides the
shape of delta: ``per-frame`` (N, T, H, W, 3), ``shared`` (N, 1, H, W, 3), broadcast over time.
Results are uint8 clips with ``|adv - clean| <= floor(eps)`` everywhere, inside 0..255 (where
clipping to 0..255 bites, a shared perturbation is smaller on the clipped pixels).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from attacker.adversarial.differentiable import LogitsFn
from attacker.adversarial.options import Perturbation, PGDOptions

__all__ = ["integer_radius", "perturbation_shape", "pgd_linf", "sign_noise"]


def integer_radius(eps: float) -> int:
    """The largest whole pixel change within ``eps`` (clips are uint8)."""
    return math.floor(eps + 1e-9)


def perturbation_shape(
    clips_shape: tuple[int, ...], perturbation: Perturbation
) -> tuple[int, int, int, int, int]:
    """Shape of delta for clips (N, T, H, W, 3) under the perturbation model."""
    if len(clips_shape) != 5 or clips_shape[-1] != 3:
        raise ValueError(f"clips must be shaped (N, T, H, W, 3), got {clips_shape}")
    n, t, h, w, c = clips_shape
    return (n, 1 if perturbation == "shared" else t, h, w, c)


def _check(clips: np.ndarray) -> None:
    if clips.dtype != np.uint8 or clips.ndim != 5 or clips.shape[-1] != 3:
        raise ValueError(f"clips must be uint8 (N, T, H, W, 3), got {clips.dtype} {clips.shape}")


def _finish(clean: torch.Tensor, delta: torch.Tensor, radius: int) -> np.ndarray:
    """Whole-pixel perturbation within the radius, added and clipped to 0..255, as uint8."""
    step = delta.detach().round().clamp(-radius, radius)
    adv = (clean + step).clamp(0, 255)
    return adv.to(torch.uint8).numpy()


def pgd_linf(
    logits_fn: LogitsFn,
    clips: np.ndarray,
    labels: np.ndarray,
    options: PGDOptions,
    *,
    generator: torch.Generator | None = None,
    batch_size: int = 32,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Untargeted PGD: ascend the cross-entropy of ``labels`` by ``options.steps`` signed
    gradient steps (of the momentum-accumulated gradient when ``options.momentum`` > 0),
    projecting delta onto the L-inf ball after each (and the clip onto 0..255 for a per-frame
    delta). Returns the adversarial clips (uint8, same shape as ``clips``)."""
    _check(clips)
    if labels.shape != (clips.shape[0],):
        raise ValueError(f"need one label per clip, got {labels.shape} for {clips.shape[0]}")
    radius = integer_radius(options.eps)
    out = np.empty_like(clips)
    for start in range(0, clips.shape[0], batch_size):
        x = torch.from_numpy(np.ascontiguousarray(clips[start : start + batch_size])).float()
        y = torch.from_numpy(labels[start : start + batch_size].astype(np.int64))
        shape = perturbation_shape(tuple(x.shape), options.perturbation)
        delta = torch.zeros(shape)
        if options.random_start:
            delta = (torch.rand(shape, generator=generator) * 2 - 1) * radius
        velocity = torch.zeros(shape)
        for _ in range(options.steps):
            delta.requires_grad_(True)
            loss = F.cross_entropy(logits_fn((x + delta).clamp(0, 255)), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, [delta])
            if options.momentum > 0:
                scale = grad.abs().mean(dim=(1, 2, 3, 4), keepdim=True).clamp_min(1e-12)
                velocity = options.momentum * velocity + grad / scale
                grad = velocity
            delta = (delta.detach() + options.step * grad.sign()).clamp(-radius, radius)
            if options.perturbation == "per-frame":
                delta = (x + delta).clamp(0, 255) - x
        out[start : start + len(x)] = _finish(x, delta, radius)
        if on_batch is not None:
            on_batch(len(x))
    return out


def sign_noise(
    clips: np.ndarray, eps: float, perturbation: Perturbation, rng: np.random.Generator
) -> np.ndarray:
    """The random control: every pixel moved by exactly +-floor(eps) with a fair coin (the
    same L-inf norm as PGD's largest step), per frame or one pattern shared by all frames."""
    _check(clips)
    radius = integer_radius(eps)
    signs = rng.integers(0, 2, size=perturbation_shape(clips.shape, perturbation), dtype=np.int16)
    noise = (signs * 2 - 1) * radius
    return np.clip(clips.astype(np.int16) + noise, 0, 255).astype(np.uint8)
