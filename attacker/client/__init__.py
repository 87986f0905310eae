"""Talking to the victim (VictimClient) and remembering what it said (ResponseCache)."""

from attacker.client.cache import MemoryCache, ResponseCache
from attacker.client.errors import (
    AttackerError,
    Blocked,
    BudgetExhausted,
    RetriesExhausted,
    VictimError,
)
from attacker.client.identity import answer_identity
from attacker.client.victim import Answered, RetryPolicy, VictimClient, parse_retry_after

__all__ = [
    "Answered",
    "AttackerError",
    "Blocked",
    "BudgetExhausted",
    "MemoryCache",
    "ResponseCache",
    "RetriesExhausted",
    "RetryPolicy",
    "VictimClient",
    "VictimError",
    "answer_identity",
    "parse_retry_after",
]
