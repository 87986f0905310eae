"""What a paid answer is an answer *of*: the one place the attacker computes cache identity."""

from __future__ import annotations

import logging

from shared.hashing import victim_identity
from shared.schemas import ModelInfo

log = logging.getLogger("vidsteal.attacker")


def answer_identity(base_url: str, info: ModelInfo) -> str:
    """Cache identity of answers from ``base_url`` to the key that fetched ``info``.

    Includes the key id and the server's answer-policy fingerprint, so answers paid by one key
    (or under one set of defenses, or poisoned) are never reused for another. A server too old
    to publish them gets the former identity (URL, model, output mode, top-k), with a warning.
    """
    if info.key_id is None or info.policy_fingerprint is None:
        log.warning(
            "victim %s publishes no key id / answer-policy fingerprint: cached answers are "
            "shared by every key with the same output mode there",
            base_url,
        )
    return victim_identity(
        base_url,
        info.model,
        info.output.value,
        info.top_k,
        key_id=info.key_id,
        policy_fingerprint=info.policy_fingerprint,
    )
