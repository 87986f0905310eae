"""Budget reservation, refund and idempotent replay, each one atomic Lua call."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

from redis.asyncio import Redis

from victim_server.accounting import keyspace, lua

NO_IDEMPOTENCY = "-"


class ReserveStatus(StrEnum):
    OK = "ok"
    EXHAUSTED = "exhausted"
    UNKNOWN = "unknown"
    REVOKED = "revoked"
    REPLAY = "replay"  # a finished request with this Idempotency-Key: answer with its response
    IN_PROGRESS = "in_progress"  # the first request with this Idempotency-Key is still running
    TAKEOVER = "takeover"  # ... was charged but abandoned (server died): continue, uncharged
    MISMATCH = "mismatch"  # same Idempotency-Key, different request body


@dataclass(frozen=True)
class Reservation:
    status: ReserveStatus
    budget: int
    spent: int
    stored_response: str | None = None

    @property
    def remaining(self) -> int:
        return max(0, self.budget - self.spent)


class Ledger:
    """Charges clips against a key's budget; never more than the budget, under any concurrency."""

    def __init__(
        self, redis: Redis, *, idempotency_ttl_s: int = 24 * 3600, abandoned_after_s: float = 60.0
    ) -> None:
        self._redis = redis
        self._ttl = idempotency_ttl_s
        self._abandoned_after = abandoned_after_s
        self._reserve = redis.register_script(lua.RESERVE)
        self._refund = redis.register_script(lua.REFUND)
        self._commit = redis.register_script(lua.COMMIT)

    async def reserve(
        self,
        key_id: str,
        clips: int,
        *,
        idempotency_key: str | None,
        fingerprint: str,
        request_id: str,
    ) -> Reservation:
        idem = idempotency_key is not None
        status, budget, spent, payload = await self._reserve(
            keys=[keyspace.key_record(key_id), self._idem_key(key_id, idempotency_key)],
            args=[
                clips,
                "1" if idem else "0",
                fingerprint,
                self._ttl,
                request_id,
                time.time(),
                self._abandoned_after,
            ],
        )
        return Reservation(
            status=ReserveStatus(_text(status)),
            budget=int(budget),
            spent=int(spent),
            stored_response=_text(payload) or None,
        )

    async def refund(self, key_id: str, clips: int, *, idempotency_key: str | None) -> int:
        spent = await self._refund(
            keys=[keyspace.key_record(key_id), self._idem_key(key_id, idempotency_key)],
            args=[clips, "1" if idempotency_key is not None else "0"],
        )
        return int(spent)

    async def commit(
        self, key_id: str, *, idempotency_key: str, fingerprint: str, response_json: str
    ) -> None:
        await self._commit(
            keys=[self._idem_key(key_id, idempotency_key)],
            args=[fingerprint, response_json, self._ttl],
        )

    @staticmethod
    def _idem_key(key_id: str, idempotency_key: str | None) -> str:
        return keyspace.idempotency(key_id, idempotency_key or NO_IDEMPOTENCY)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
