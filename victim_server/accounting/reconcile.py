"""Settle a charge whose outcome is unknown: give it back now, or as soon as Redis answers.

A reserve (or anything after it) that fails with a Redis error may or may not have charged.
:meth:`Reconciler.settle` releases the request id: the release gives back exactly what was
charged, or leaves a tombstone so a reserve still on its way charges nothing. When Redis does not
answer the release either, it is retried in the background until ``give_up_after_s``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from enum import StrEnum

from redis.exceptions import RedisError

from victim_server.accounting.ledger import Ledger, Release

log = logging.getLogger("vidsteal.victim.accounting")


class Settlement(StrEnum):
    NOT_CHARGED = "none"  # nothing was charged (or it was committed and stands)
    REFUNDED = "refunded"  # a charge was made and has been given back
    PENDING = "unknown"  # Redis did not answer: any charge is given back when it does


@dataclass(frozen=True)
class ReconcileConfig:
    attempts_now: int = 2
    retry_delay_s: float = 0.1
    background_retry_s: float = 1.0
    give_up_after_s: float = 600.0


class Reconciler:
    def __init__(self, ledger: Ledger, config: ReconcileConfig | None = None) -> None:
        self._ledger = ledger
        self._config = config or ReconcileConfig()
        self._background: set[asyncio.Task[None]] = set()

    async def settle(
        self, key_id: str, *, request_id: str, idempotency_key: str | None
    ) -> Settlement:
        """Release ``request_id``; says whether anything stays charged."""
        for attempt in range(self._config.attempts_now):
            try:
                release = await self._ledger.release(
                    key_id, request_id=request_id, idempotency_key=idempotency_key
                )
            except RedisError as exc:
                log.warning("release of request %s failed: %s", request_id, exc)
                if attempt + 1 < self._config.attempts_now:
                    await asyncio.sleep(self._config.retry_delay_s)
                continue
            return _settlement(release)
        task = asyncio.create_task(self._settle_later(key_id, request_id, idempotency_key))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return Settlement.PENDING

    @property
    def pending(self) -> int:
        return len(self._background)

    async def drain(self, timeout_s: float) -> None:
        """Wait (bounded) for background releases, e.g. at shutdown."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=timeout_s)
        for task in list(self._background):
            task.cancel()

    async def _settle_later(
        self, key_id: str, request_id: str, idempotency_key: str | None
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.give_up_after_s
        while loop.time() < deadline:
            await asyncio.sleep(self._config.background_retry_s)
            try:
                release = await self._ledger.release(
                    key_id, request_id=request_id, idempotency_key=idempotency_key
                )
            except RedisError:
                continue
            log.info(
                "request %s of key %s settled late: %d clip(s) given back",
                request_id,
                key_id,
                release.refunded,
            )
            return
        log.error(
            "request %s of key %s could not be settled in %.0f s: its charge (if any) stands",
            request_id,
            key_id,
            self._config.give_up_after_s,
        )


def _settlement(release: Release) -> Settlement:
    return Settlement.REFUNDED if release.refunded > 0 else Settlement.NOT_CHARGED
