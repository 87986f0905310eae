"""Budget reservation, release and idempotent replay, each one atomic Lua call.

Every call names the request by its id, so every call is safe to repeat: a reserve whose reply
was lost (a timeout after Redis ran it) can be *released* by id, which gives back exactly what
that reserve charged, or nothing if it never ran (and then it never will).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from redis.asyncio import Redis

from victim_server.accounting import keyspace, lua
from victim_server.coalesce import Coalescer
from victim_server.script_pipeline import ScriptPipeline

NO_IDEMPOTENCY = "-"
NO_RESERVATION = "-"


class ReserveStatus(StrEnum):
    OK = "ok"
    EXHAUSTED = "exhausted"
    UNKNOWN = "unknown"
    REVOKED = "revoked"
    REPLAY = "replay"  # a finished request with this Idempotency-Key: answer with its response
    IN_PROGRESS = "in_progress"  # the first request with this Idempotency-Key is still running
    TAKEOVER = "takeover"  # ... was charged but abandoned (server died): continue, uncharged
    MISMATCH = "mismatch"  # same Idempotency-Key, different request body
    VOID = "void"  # this request id was released before its reserve ran: nothing charged
    STALE = "stale"  # the caller's copy of the key record is out of date: nothing charged


@dataclass(frozen=True)
class Reservation:
    status: ReserveStatus
    budget: int
    spent: int
    stored_response: str | None = None

    @property
    def remaining(self) -> int:
        return max(0, self.budget - self.spent)


@dataclass(frozen=True)
class _Commit:
    idempotency_key: str
    fingerprint: str
    response_json: str
    request_id: str | None


@dataclass(frozen=True)
class Release:
    """What releasing a request id did: ``refunded`` clips given back (0 when it had charged
    nothing, had been released already, or was committed)."""

    previous_state: str  # none | held | void | released | committed
    refunded: int
    spent: int


class Ledger:
    """Charges clips against a key's budget; never more than the budget, under any concurrency."""

    def __init__(
        self,
        redis: Redis,
        *,
        idempotency_ttl_s: int = 24 * 3600,
        abandoned_after_s: float = 60.0,
        reservation_ttl_s: int = 600,
        scripts: ScriptPipeline | None = None,
    ) -> None:
        """``scripts``: the pipeline the ledger's scripts share with other writers of the
        request path (one round trip for all of a loop turn's calls); its own by default."""
        self._redis = redis
        self._ttl = idempotency_ttl_s
        self._abandoned_after = abandoned_after_s
        self._reservation_ttl = reservation_ttl_s
        scripts = scripts or ScriptPipeline(redis)
        self._reserve = scripts.register(lua.RESERVE)
        self._release = scripts.register(lua.RELEASE)
        self._commit = scripts.register(lua.COMMIT)
        self._commit_together: Coalescer[str, _Commit, None] = Coalescer(self._commit_group)

    async def reserve(
        self,
        key_id: str,
        clips: int,
        *,
        idempotency_key: str | None,
        fingerprint: str,
        request_id: str,
        revision: int | None = None,
    ) -> Reservation:
        """Charge ``clips``; with ``revision`` (of the caller's copy of the key record), a record
        changed since is answered ``STALE`` without a charge."""
        idem = idempotency_key is not None
        status, budget, spent, payload = await self._reserve(
            keys=[
                keyspace.key_record(key_id),
                self._idem_key(key_id, idempotency_key),
                keyspace.reservation(key_id, request_id),
            ],
            args=[
                clips,
                "1" if idem else "0",
                fingerprint,
                self._ttl,
                request_id,
                time.time(),
                self._abandoned_after,
                self._reservation_ttl,
                "" if revision is None else revision,
            ],
        )
        return Reservation(
            status=ReserveStatus(_text(status)),
            budget=int(budget),
            spent=int(spent),
            stored_response=_text(payload) or None,
        )

    async def release(
        self, key_id: str, *, request_id: str, idempotency_key: str | None
    ) -> Release:
        """Give back what request ``request_id`` charged (idempotent; a no-op after commit)."""
        state, refunded, spent = await self._release(
            keys=[
                keyspace.key_record(key_id),
                self._idem_key(key_id, idempotency_key),
                keyspace.reservation(key_id, request_id),
            ],
            args=[request_id, self._reservation_ttl],
        )
        return Release(previous_state=_text(state), refunded=int(refunded), spent=int(spent))

    async def commit(
        self,
        key_id: str,
        *,
        idempotency_key: str,
        fingerprint: str,
        response_json: str,
        request_id: str | None = None,
    ) -> None:
        """Store the answer for replay; the request's charge can no longer be released. The
        commits of one key made in the same loop turn go to Redis as one script call."""
        commit = _Commit(idempotency_key, fingerprint, response_json, request_id)
        await self._commit_together(key_id, commit)

    async def _commit_group(self, key_id: str, commits: Sequence[_Commit]) -> list[None]:
        keys: list[str] = []
        args: list[str | int] = [self._ttl]
        for commit in commits:
            keys += [
                self._idem_key(key_id, commit.idempotency_key),
                keyspace.reservation(key_id, commit.request_id or NO_RESERVATION),
            ]
            args += [commit.fingerprint, commit.response_json]
        await self._commit(keys=keys, args=args)
        return [None] * len(commits)

    async def has_record(self, key_id: str, idempotency_key: str) -> bool:
        """Whether a request with this Idempotency-Key was seen (pending or done)."""
        return bool(await self._redis.exists(self._idem_key(key_id, idempotency_key)))

    @staticmethod
    def _idem_key(key_id: str, idempotency_key: str | None) -> str:
        return keyspace.idempotency(key_id, idempotency_key or NO_IDEMPOTENCY)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
