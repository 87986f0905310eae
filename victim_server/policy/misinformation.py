"""Adaptive Misinformation (Kariyappa & Qureshi, CVPR 2020).

Extraction queries tend to be out of distribution for the victim; benign ones do not. Per clip
the victim's own top probability ``max p`` is the OOD score (maximum softmax probability), and
the answer blends toward a misinformation function's output:

    y' = (1 - alpha) y + alpha y_mis,      alpha = sigmoid(nu * (tau - max p))

so clips the victim is sure of (``max p`` above ``tau``) keep their answer, and clips it is
unsure of get mostly misinformation. The misinformation function here needs no training: the
softmax of the *negated* logits, which ranks the classes in reverse (the victim's least likely
class becomes the answer's top class): consistent, confident-looking and wrong, so a student
trained on it learns a reversed function. ``tau`` is calibrated on benign clips with
:func:`calibrate_tau`: the fraction of benign clips whose answer is mostly misinformation
(``alpha > 1/2``) is the fraction whose top probability is below ``tau``.
"""

from __future__ import annotations

import numpy as np

from shared.schemas import AdaptiveMisinformation

__all__ = ["calibrate_tau", "misinform", "misinformation", "misinformation_weight"]


def misinformation(logits: np.ndarray) -> np.ndarray:
    """The misinformation function's answers (N, K): softmax of the negated logits."""
    z = -np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return np.asarray(e / e.sum(axis=-1, keepdims=True))


def misinformation_weight(probs: np.ndarray, config: AdaptiveMisinformation) -> np.ndarray:
    """alpha (N,): the weight of misinformation in each clip's answer."""
    margin = config.nu * (config.tau - np.asarray(probs, dtype=np.float64).max(axis=-1))
    # sigmoid without overflow for |margin| up to nu = 1e4
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * margin)))


def misinform(probs: np.ndarray, logits: np.ndarray, config: AdaptiveMisinformation) -> np.ndarray:
    """The answers (N, K) after adaptive misinformation."""
    alpha = misinformation_weight(probs, config)[:, None]
    return np.asarray((1.0 - alpha) * probs + alpha * misinformation(logits))


def calibrate_tau(benign_probs: np.ndarray, fraction: float) -> float:
    """The ``tau`` at which ``fraction`` of these benign clips get mostly misinformation."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
    top = np.asarray(benign_probs, dtype=np.float64).max(axis=-1)
    return float(np.clip(np.quantile(top, fraction), 1e-6, 1.0 - 1e-6))
