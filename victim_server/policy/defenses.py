"""Output defenses (as in ART's postprocessors) and detection poisoning. Pure functions on
probability rows (N, C); each returns new rows that still sum to 1.

- ``reverse_sigmoid`` (Lee et al., 2019): p' ∝ p - beta * (sigmoid(gamma * logit(p)) - 1/2);
  keeps the top-1 class for small beta, misleads gradients of a distilling student.
- ``gaussian_noise``: p + N(0, sigma), clipped at 0, renormalised (may flip close calls).
- ``top_k``: keep the k largest probabilities, zero the rest, renormalise (top-1 kept).
- ``round_to``: round to d decimals, renormalised on the largest entry (top-1 kept unless tied).
- ``label_only``: one-hot of the top-1 class (used with ``OutputMode.LABEL`` semantics).
- ``shuffle_top_k``: the poison of an alarmed key: the top-k scores dealt to the top-k classes
  in a random order, so the answer keeps its shape but misleads.
"""

from __future__ import annotations

import numpy as np

from shared.schemas import DefensePolicy

_EPS = 1e-12


def _normalise(rows: np.ndarray) -> np.ndarray:
    rows = np.clip(rows, 0.0, None)
    total = rows.sum(axis=-1, keepdims=True)
    uniform = np.full_like(rows, 1.0 / rows.shape[-1])
    return np.where(total > _EPS, rows / np.maximum(total, _EPS), uniform)


def reverse_sigmoid(probs: np.ndarray, beta: float, gamma: float) -> np.ndarray:
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    logit = np.log(p) - np.log1p(-p)
    perturbation = beta * (1.0 / (1.0 + np.exp(-gamma * logit)) - 0.5)
    return _normalise(p - perturbation)


def gaussian_noise(probs: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return _normalise(probs + rng.normal(0.0, sigma, size=probs.shape))


def top_k(probs: np.ndarray, k: int) -> np.ndarray:
    k = min(k, probs.shape[-1])
    order = np.argsort(-probs, axis=-1, kind="stable")
    keep = np.zeros_like(probs, dtype=bool)
    np.put_along_axis(keep, order[..., :k], True, axis=-1)
    return _normalise(np.where(keep, probs, 0.0))


def round_to(probs: np.ndarray, decimals: int) -> np.ndarray:
    rounded = np.round(probs, decimals)
    rows = np.arange(probs.shape[0])
    top = probs.argmax(axis=-1)
    # Put the rounding residue on the top class, so rows sum to 1 and the top-1 stays.
    rounded[rows, top] += 1.0 - rounded.sum(axis=-1)
    return rounded


def label_only(probs: np.ndarray) -> np.ndarray:
    out = np.zeros_like(probs)
    out[np.arange(probs.shape[0]), probs.argmax(axis=-1)] = 1.0
    return out


def shuffle_top_k(probs: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    k = min(k, probs.shape[-1])
    out = probs.copy()
    order = np.argsort(-probs, axis=-1, kind="stable")[..., :k]
    for row in range(probs.shape[0]):
        classes = order[row]
        out[row, classes] = probs[row, rng.permutation(classes)]
    return out


def apply_defenses(
    probs: np.ndarray, policy: DefensePolicy, rng: np.random.Generator
) -> np.ndarray:
    """The key's defenses in their fixed order: reverse sigmoid, noise, top-k, rounding,
    label-only."""
    out = probs
    if policy.reverse_sigmoid is not None:
        out = reverse_sigmoid(out, policy.reverse_sigmoid.beta, policy.reverse_sigmoid.gamma)
    if policy.gaussian_noise is not None and policy.gaussian_noise.sigma > 0:
        out = gaussian_noise(out, policy.gaussian_noise.sigma, rng)
    if policy.top_k is not None:
        out = top_k(out, policy.top_k)
    if policy.round_decimals is not None:
        out = round_to(out, policy.round_decimals)
    if policy.label_only:
        out = label_only(out)
    return out


def is_active(policy: DefensePolicy) -> bool:
    return (
        policy.reverse_sigmoid is not None
        or (policy.gaussian_noise is not None and policy.gaussian_noise.sigma > 0)
        or policy.top_k is not None
        or policy.round_decimals is not None
        or policy.label_only
    )
