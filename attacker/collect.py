"""Spend the budget: query source -> content hash -> cache lookup -> HTTP for misses only ->
cache -> transfer set.

Chunks of clips go out concurrently but land in the transfer set in query order, so a prefix of
the transfer set is what a smaller budget would have bought (unless the victim stopped answering
mid-run: then every answer that was paid is still written, with the unanswered clips left out).
``paid`` counts the queries the victim charged during this run: an answer the victim replays
on a first attempt was charged by an earlier run and is counted under ``extra["replayed"]``.

The budget is counted locally before each request is sent, so the run never asks for one query
more than it may; the victim's own accounting (``/v1/budget``) bounds it from the other side.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from attacker.client import Blocked, BudgetExhausted, RetriesExhausted, VictimClient
from attacker.sources import QueryClip
from shared import hashing


@dataclass
class CollectStats:
    clips: int = 0  # records in the transfer set
    paid: int = 0  # queries charged during this run
    cache_hits: int = 0
    requests: int = 0
    retries: int = 0
    # target | budget | source | victim-exhausted | blocked | throttled | victim-unavailable
    stopped_by: str = "target"
    seconds: float = 0.0  # wall time of the query phase
    extra: dict[str, Any] = field(default_factory=dict)


ProgressFn = Callable[[CollectStats], None]
AnswerObserver = Callable[[list[QueryClip], list[dict[str, Any]]], None]


class AnswerCache(Protocol):
    identity: str

    async def get_many(self, clip_hashes: list[str]) -> list[dict[str, Any] | None]: ...

    async def put_many(self, answers: dict[str, dict[str, Any]]) -> None: ...


class RecordSink(Protocol):
    """Where answered clips go, in query order (a TransferSetWriter, or memory for eval sets)."""

    def append(
        self,
        clip: np.ndarray,
        *,
        clip_hash: str,
        recipe: dict[str, Any],
        result: dict[str, Any],
        true_label: int | None,
        paid: bool,
    ) -> object: ...


@dataclass
class MemorySink:
    clips: list[np.ndarray] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    true_labels: list[int | None] = field(default_factory=list)

    def append(
        self,
        clip: np.ndarray,
        *,
        clip_hash: str,
        recipe: dict[str, Any],
        result: dict[str, Any],
        true_label: int | None,
        paid: bool,
    ) -> None:
        self.clips.append(clip)
        self.results.append(result)
        self.true_labels.append(true_label)


@dataclass
class _Chunk:
    queries: list[QueryClip]
    hashes: list[str]
    answers: list[dict[str, Any] | None]  # cached answers, None where a query must be paid
    paid_rows: set[int] = field(default_factory=set)


def request_idempotency_key(identity: str, hashes: list[str]) -> str:
    """Same clips to the same victim -> same key: a retried or re-run request is never charged
    twice, even if the answer was lost before it reached the cache."""
    digest = hashlib.blake2b(identity.encode(), digest_size=16)
    for h in hashes:
        digest.update(h.encode())
    return digest.hexdigest()


class Collector:
    def __init__(
        self,
        *,
        client: VictimClient,
        cache: AnswerCache,
        writer: RecordSink,
        target_clips: int,
        paid_allowance: int,
        batch_clips: int,
        concurrency: int,
        progress: ProgressFn | None = None,
        observer: AnswerObserver | None = None,
    ) -> None:
        self.client = client
        self.cache = cache
        self.writer = writer
        self.target = target_clips
        self.allowance = paid_allowance
        self.batch_clips = batch_clips
        self.concurrency = concurrency
        self.progress = progress
        self.observer = observer
        self.stats = CollectStats()
        self._reserved = 0  # queries committed to requests, counted before sending
        self._victim_exhausted = False
        self._paying: set[asyncio.Task[_Chunk]] = set()  # requests not answered yet

    async def run(self, source: Iterator[QueryClip]) -> CollectStats:
        in_flight: asyncio.Queue[asyncio.Task[_Chunk] | None] = asyncio.Queue(self.concurrency)
        started = time.perf_counter()
        producer = asyncio.create_task(self._produce(source, in_flight))
        try:
            while (task := await in_flight.get()) is not None:
                chunk = await task
                self._write(chunk)
        finally:
            producer.cancel()
            while not in_flight.empty():
                pending = in_flight.get_nowait()
                if pending is not None:
                    pending.cancel()
            self.stats.seconds = round(time.perf_counter() - started, 3)
        return self.stats

    async def _produce(
        self, source: Iterator[QueryClip], out: asyncio.Queue[asyncio.Task[_Chunk] | None]
    ) -> None:
        planned = 0
        try:
            while planned < self.target and not self._victim_exhausted:
                size = min(self.batch_clips, self.target - planned)
                queries = list(itertools.islice(source, size))
                if not queries:
                    self.stats.stopped_by = "source"
                    break
                hashes = [q.clip_hash or hashing.clip_hash(q.clip) for q in queries]
                answers = await self.cache.get_many(hashes)
                misses = [i for i, a in enumerate(answers) if a is None]
                if len(misses) > self.allowance - self._reserved and self._paying:
                    # Requests in flight may hand their reservation back (answers the victim
                    # had charged in an earlier run): count them before cutting the budget.
                    await asyncio.wait(set(self._paying))
                affordable = self.allowance - self._reserved
                if self._victim_exhausted:
                    break
                if len(misses) > affordable:
                    # Keep the chunk's prefix that the remaining budget can pay for.
                    cut = misses[affordable] if affordable >= 0 else 0
                    queries, hashes, answers = queries[:cut], hashes[:cut], answers[:cut]
                    misses = misses[:affordable]
                    self.stats.stopped_by = "budget"
                self._reserved += len(misses)
                if queries:
                    chunk = _Chunk(queries, hashes, answers)
                    task = asyncio.create_task(self._pay(chunk, misses))
                    self._paying.add(task)
                    task.add_done_callback(self._paying.discard)
                    await out.put(task)
                    planned += len(queries)
                if self.stats.stopped_by == "budget":
                    break
        finally:
            await out.put(None)

    async def _pay(self, chunk: _Chunk, misses: list[int]) -> _Chunk:
        if not misses:
            return chunk
        clips = np.stack([chunk.queries[i].clip for i in misses])
        key = request_idempotency_key(self.cache.identity, [chunk.hashes[i] for i in misses])
        try:
            answered = await self.client.classify_answer(clips, idempotency_key=key)
        except BudgetExhausted:
            self._victim_exhausted = True
            self.stats.stopped_by = "victim-exhausted"
            return chunk
        except Blocked:
            # Detection (or a revoked key) stops the attack; what was paid so far is kept.
            self._victim_exhausted = True
            self.stats.stopped_by = "blocked"
            self.stats.extra.setdefault("blocked_after_paid", self.stats.paid)
            return chunk
        except RetriesExhausted as exc:
            # The retry window ran out: the victim stayed down (or kept throttling). What was
            # paid so far is kept; a rerun gets this request's answer replayed, uncharged.
            self._victim_exhausted = True
            self.stats.stopped_by = "throttled" if exc.throttled else "victim-unavailable"
            self.stats.extra["last_failure"] = str(exc)
            # Sent but never answered: the victim may have charged these; a rerun gets them
            # replayed without a second charge.
            unanswered = self.stats.extra.get("unanswered", 0) + len(misses)
            self.stats.extra["unanswered"] = unanswered
            return chunk
        response = answered.response
        self.stats.requests += 1
        if answered.charged_earlier:
            # Charged in an earlier run whose answer never reached the cache: not paid now,
            # and the reservation goes back to the allowance.
            self._reserved -= len(misses)
            self.stats.extra["replayed"] = self.stats.extra.get("replayed", 0) + len(misses)
        else:
            self.stats.paid += len(misses)
        paid = {
            chunk.hashes[i]: r.model_dump(exclude_none=True)
            for i, r in zip(misses, response.results, strict=True)
        }
        await self.cache.put_many(paid)  # before the answer is used anywhere
        for i in misses:
            chunk.answers[i] = paid[chunk.hashes[i]]
        chunk.paid_rows.update(misses)
        return chunk

    def _write(self, chunk: _Chunk) -> None:
        rows = zip(chunk.queries, chunk.hashes, chunk.answers, strict=True)
        written: list[QueryClip] = []
        for row, (query, clip_hash, answer) in enumerate(rows):
            if answer is None:  # the victim stopped answering: keep every answer that was paid
                continue
            written.append(query)
            self.writer.append(
                query.clip,
                clip_hash=clip_hash,
                recipe=query.recipe,
                result=answer,
                true_label=query.true_label,
                paid=row in chunk.paid_rows,
            )
            self.stats.clips += 1
            self.stats.cache_hits += row not in chunk.paid_rows
        if self.observer is not None and written:
            self.observer(written, [a for a in chunk.answers if a is not None])
        if self.progress is not None:
            self.progress(self.stats)
