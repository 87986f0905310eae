"""From logits to the answers a key may see: poison (alarmed keys), defenses, output mode."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from shared.schemas import ClipResult, DefensePolicy, OutputMode
from victim_server.policy.defenses import apply_defenses, is_active, shuffle_top_k
from victim_server.policy.outputs import build_results, softmax

POISON_TOP_K = 5


def compose_answers(
    logits: np.ndarray,
    *,
    mode: OutputMode,
    labels: Sequence[str],
    top_k: int,
    defenses: DefensePolicy,
    poison: bool,
    rng: np.random.Generator,
) -> list[ClipResult]:
    """Pure: the same logits, policy and generator state give the same answers."""
    probs = softmax(logits)
    changed = poison or is_active(defenses)
    if poison:
        probs = shuffle_top_k(probs, POISON_TOP_K, rng)
    if is_active(defenses):
        probs = apply_defenses(probs, defenses, rng)
    # A logits key whose answers were altered gets log-probabilities of what was decided.
    shown_logits = np.log(np.clip(probs, 1e-12, None)) if changed else logits
    return build_results(mode=mode, logits=shown_logits, probs=probs, labels=labels, top_k=top_k)
