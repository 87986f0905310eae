"""The answer-policy fingerprint a key sees in GET /v1/model.

It changes whenever what the key is answered with could change (output mode, effective top-k,
output defenses, poisoning on alarm), so a client's cache never mixes answers given under two
policies. It is keyed with a secret derived from the admin token: the same on every replica,
yet an attacker cannot test guesses of the policy (noise level, detection delta) against it.

The alarm state itself is left out on purpose: a fingerprint that changed when poisoning began
would tell the attacker it had been caught.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from shared.schemas import DefensePolicy, DetectionPolicy, OutputMode

_PERSON = b"vidsteal.policy1"


def fingerprint_secret(admin_token: str) -> bytes:
    return hashlib.sha256(b"vidsteal.policy-fingerprint\0" + admin_token.encode()).digest()


def policy_fingerprint(
    *,
    output: OutputMode,
    top_k: int,
    defenses: DefensePolicy,
    detection: DetectionPolicy,
    secret: bytes,
) -> str:
    """32 hex chars; equal for two policies exactly when their answers are drawn alike."""
    policy: dict[str, Any] = {
        "output": output.value,
        "top_k": top_k if output is OutputMode.TOPK else None,
        "defenses": defenses.model_dump(mode="json"),
        # Block and throttle refuse; only poisoning changes the answers that are given.
        "poison": (
            {"detector": detection.detector, "delta": detection.delta}
            if detection.action == "poison" and detection.detector != "none"
            else None
        ),
    }
    canonical = json.dumps(policy, sort_keys=True, separators=(",", ":"))
    digest = hashlib.blake2b(canonical.encode(), digest_size=16, key=secret, person=_PERSON)
    return digest.hexdigest()
