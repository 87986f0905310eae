"""Redis key names. Every key of one API key shares the ``{key_id}`` hash tag (cluster-safe)."""

from __future__ import annotations

PREFIX = "vs"
KEY_INDEX = f"{PREFIX}:keys"  # set of all key ids (admin listing only)


def key_record(key_id: str) -> str:
    """Hash: secret hash, plan, budget, spent, policies."""
    return f"{PREFIX}:{{{key_id}}}:key"


def idempotency(key_id: str, idempotency_key: str) -> str:
    return f"{PREFIX}:{{{key_id}}}:idem:{idempotency_key}"


def detection(key_id: str, part: str) -> str:
    """Detector state of one key; ``part`` names one structure (e.g. 'meta', 'class:3')."""
    return f"{PREFIX}:{{{key_id}}}:det:{part}"


def reservation(key_id: str, request_id: str) -> str:
    """What one request charged (see :mod:`victim_server.accounting.lua`), kept a short while."""
    return f"{PREFIX}:{{{key_id}}}:rsv:{request_id}"


def operation(key_id: str, operation_id: str) -> str:
    """Marks an admin operation (a top-up) as done, so a retried call does not repeat it."""
    return f"{PREFIX}:{{{key_id}}}:op:{operation_id}"
