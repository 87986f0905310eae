"""From logits to the answers a key may see: answer-perturbing defenses (adaptive
misinformation, prediction poisoning), poison (alarmed keys), postprocessing defenses, output
mode."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from shared.schemas import ClipResult, DefensePolicy, OutputMode
from victim_server.policy.defenses import apply_defenses, is_active, shuffle_top_k
from victim_server.policy.mad import mad_perturb
from victim_server.policy.misinformation import misinform
from victim_server.policy.outputs import build_results, softmax

POISON_TOP_K = 5


def perturb_answers(
    probs: np.ndarray,
    logits: np.ndarray,
    features: np.ndarray | None,
    defenses: DefensePolicy,
) -> np.ndarray:
    """The defenses that rewrite the model's own answer (they need its logits and features):
    adaptive misinformation, then prediction poisoning (its surrogate reads the penultimate
    features, or the logits of a model that exposes none)."""
    out = probs
    if defenses.adaptive_misinformation is not None:
        out = misinform(out, logits, defenses.adaptive_misinformation)
    if defenses.prediction_poisoning is not None:
        inputs = features if features is not None else logits
        out = mad_perturb(out, inputs, defenses.prediction_poisoning)
    return out


def compose_answers(
    logits: np.ndarray,
    *,
    mode: OutputMode,
    labels: Sequence[str],
    top_k: int,
    defenses: DefensePolicy,
    poison: bool,
    rng: np.random.Generator,
    features: np.ndarray | None = None,
) -> list[ClipResult]:
    """Pure: the same logits, features, policy and generator state give the same answers."""
    probs = softmax(logits)
    rewrites = (
        defenses.adaptive_misinformation is not None or defenses.prediction_poisoning is not None
    )
    changed = poison or rewrites or is_active(defenses)
    if rewrites:
        probs = perturb_answers(probs, logits, features, defenses)
    if poison:
        probs = shuffle_top_k(probs, POISON_TOP_K, rng)
    if is_active(defenses):
        probs = apply_defenses(probs, defenses, rng)
    # A logits key whose answers were altered gets log-probabilities of what was decided.
    shown_logits = np.log(np.clip(probs, 1e-12, None)) if changed else logits
    return build_results(mode=mode, logits=shown_logits, probs=probs, labels=labels, top_k=top_k)
