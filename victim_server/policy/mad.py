"""Prediction poisoning: MAD (Orekondy, Goldblum & Fritz, ICLR 2020).

A thief distilling the answers ``y`` trains its student along ``G^T y``, where ``G`` (K x P) is
the Jacobian of the student's log-probabilities with respect to its P parameters. MAD answers a
``y~`` within ``dist(y~, y) <= epsilon`` on the simplex that turns this gradient the furthest:

    maximise  || G^T y~ / ||G^T y~||  -  G^T y / ||G^T y|| ||^2       (= 2 - 2 cos)

The defender does not know the thief's student, so ``G`` comes from a *surrogate*: a fixed,
randomly initialised two-layer head (``hidden`` units, ReLU) on the victim's own penultimate
features, drawn from ``surrogate_seed``. (The victim's own head would be useless: its loss
against its own answer is stationary, ``G^T y = 0``. A student early in training is close to a
random head too.) A model that exposes no features gives the head its logits instead.

Closed form, no autograd. With ``p`` the surrogate's probabilities and ``sum(y~) = 1``,
``G^T y~ = J^T (y~ - p)`` where ``J`` (K x P) is the Jacobian of the surrogate's logits; so
only the K x K Gram matrix ``Q = J J^T`` matters, and for the head ``z = W2 relu(W1 f + b1) + b2``

    Q = (|h|^2 + 1) I + (|f|^2 + 1) W2 diag(m) W2^T        (h hidden activations, m = [h > 0])

is never formed: ``Q x`` costs O(K * hidden). The heuristic of the paper evaluates the K
vertices of the simplex (one-hot targets ``e_k``); here each candidate is the point where the
segment from ``y`` toward ``e_k`` meets the budget, ``y + alpha_k (e_k - y)`` with
``alpha_k = min(1, epsilon / dist(e_k, y))``, and under ``keep_argmax`` (MAD-argmax) also
short of the point where class k would overtake the top class. The candidate with the smallest
cosine wins. Everything is vectorised over clips and candidates: O(N * K * hidden) per batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from shared.schemas import PredictionPoisoning

__all__ = ["SurrogateHead", "mad_perturb", "surrogate_head"]

HIDDEN = 64
# Under keep_argmax the top class stays ahead of every other by at least this much.
ARGMAX_MARGIN = 1e-3
_TINY = 1e-30


@dataclass(frozen=True)
class SurrogateHead:
    """``z = w2 relu(w1 x + b1) + b2``; float64, fixed once drawn."""

    w1: torch.Tensor  # (H, D)
    b1: torch.Tensor  # (H,)
    w2: torch.Tensor  # (K, H)
    b2: torch.Tensor  # (K,)

    @classmethod
    def random(
        cls, in_dim: int, classes: int, *, hidden: int = HIDDEN, seed: int = 0
    ) -> SurrogateHead:
        """PyTorch's default Linear initialisation (uniform in +-1/sqrt(fan_in)), seeded."""
        gen = torch.Generator().manual_seed(seed)

        def uniform(*shape: int, fan_in: int) -> torch.Tensor:
            bound = fan_in**-0.5
            return (torch.rand(*shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound

        return cls(
            w1=uniform(hidden, in_dim, fan_in=in_dim),
            b1=uniform(hidden, fan_in=in_dim),
            w2=uniform(classes, hidden, fan_in=hidden),
            b2=uniform(classes, fan_in=hidden),
        )

    def gram_factors(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Surrogate probabilities p (N, K) and ``Q = a I + B B^T``: a (N,), B (N, K, H)."""
        pre = x @ self.w1.T + self.b1
        h = pre.clamp_min(0.0)
        probs = torch.softmax(h @ self.w2.T + self.b2, dim=-1)
        scale = (x.square().sum(-1) + 1.0).sqrt()
        factor = self.w2[None] * (pre > 0).to(x.dtype)[:, None, :] * scale[:, None, None]
        return probs, h.square().sum(-1) + 1.0, factor


@lru_cache(maxsize=8)
def surrogate_head(in_dim: int, classes: int, seed: int) -> SurrogateHead:
    """The defender's surrogate for one (input size, classes, seed), drawn once per process."""
    return SurrogateHead.random(in_dim, classes, seed=seed)


def _gram_mul(a: torch.Tensor, factor: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``Q x`` row by row, for x (N, K)."""
    inner = torch.einsum("nkh,nk->nh", factor, x)
    return a[:, None] * x + torch.einsum("nkh,nh->nk", factor, inner)


def _budget_steps(y: torch.Tensor, config: PredictionPoisoning) -> torch.Tensor:
    """alpha (N, K): how far toward each vertex e_k the answer may move."""
    if config.norm == "l1":
        dist = 2.0 * (1.0 - y)  # |e_k - y|_1
    else:
        dist = (1.0 - 2.0 * y + y.square().sum(-1, keepdim=True)).clamp_min(0.0).sqrt()
    alpha = (config.epsilon / dist.clamp_min(_TINY)).clamp(max=1.0)
    if config.keep_argmax:
        top = y.argmax(-1, keepdim=True)
        gap = y.gather(-1, top) - y
        # (1 - a) y_top - ((1 - a) y_k + a) >= margin  <=>  a <= (gap - margin) / (1 + gap)
        cap = ((gap - ARGMAX_MARGIN) / (1.0 + gap)).clamp_min(0.0)
        cap.scatter_(-1, top, 1.0)  # moving toward the top class keeps it on top
        alpha = torch.minimum(alpha, cap)
    return alpha


def mad_perturb(probs: np.ndarray, inputs: np.ndarray, config: PredictionPoisoning) -> np.ndarray:
    """MAD answers (N, K) for the answers ``probs`` (N, K) and the surrogate's ``inputs`` (N, D)
    (the victim's penultimate features, or its logits)."""
    y = torch.from_numpy(np.asarray(probs, dtype=np.float64))
    x = torch.from_numpy(np.asarray(inputs, dtype=np.float64))
    head = surrogate_head(x.shape[-1], y.shape[-1], config.surrogate_seed)
    p, a, factor = head.gram_factors(x)
    alpha = _budget_steps(y, config)
    v = y - p
    qv, qy = _gram_mul(a, factor, v), _gram_mul(a, factor, y)
    diag = a[:, None] + factor.square().sum(-1)
    vqv = (v * qv).sum(-1, keepdim=True)
    yqv = (y * qv).sum(-1, keepdim=True)
    yqy = (y * qy).sum(-1, keepdim=True)
    # candidate k: u_k = v + alpha_k (e_k - y)
    cross = qv - yqv  # (e_k - y)^T Q v
    num = vqv + alpha * cross
    uqu = vqv + 2.0 * alpha * cross + alpha.square() * (diag - 2.0 * qy + yqy)
    cos = num / (uqu * vqv).clamp_min(_TINY).sqrt()
    cos = torch.where(alpha > 0, cos, torch.inf)  # a candidate that cannot move is no choice
    best = cos.argmin(-1, keepdim=True)
    step = alpha.gather(-1, best)  # (N, 1); 0 when no candidate can move
    target = torch.zeros_like(y).scatter_(-1, best, 1.0)
    out = y + step * (target - y)
    return np.asarray(out.clamp_min(0.0).numpy())
