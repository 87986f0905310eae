"""Micro-batching: many concurrent requests, one model thread, one forward per batch.

A batch waits for company, at most ``max_wait_s``, while a request has announced itself
(:meth:`arriving`: its body is being read, decoded and charged) and has not been queued yet, and
while it has fewer requests than were in the server when the last forward pass ended (queued,
announced or in that batch: the clients that keep the server busy, whose next requests are on
their way back). With nobody on the way and no such company expected it runs at once with what
is queued. A batch closes at ``max_batch_clips``. The queue is bounded in clips; past it, callers
get :class:`Overloaded` (the API answers 503 + Retry-After).

Why wait for requests not announced yet: with c clients each sending one clip at a time, a batch
that runs with whatever is queued splits them into two groups that alternate (one answered while
the other computes), so batches hold about c/2 clips, and a forward pass has a fixed cost that
small batches pay per clip (the embedded victim: batch 1 costs 2.7x the CPU per clip of batch 32,
batch 4 1.3x, batch 8 1.1x).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

Output = TypeVar("Output")
BatchFn = Callable[[list[np.ndarray]], list[Output]]


class Overloaded(Exception):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"inference queue full; retry after {retry_after_s:.1f}s")
        self.retry_after_s = retry_after_s


class BatcherStopped(Exception):
    pass


@dataclass
class _Job(Generic[Output]):
    clips: np.ndarray
    future: asyncio.Future[Output]
    loop: asyncio.AbstractEventLoop
    embed: bool = False  # wants the batch run by ``run_embedded``
    enqueued: float = field(default_factory=time.perf_counter)


BatchObserver = Callable[[int, float], None]  # (clips in batch, forward seconds)


class _Wake:
    """Queued when an announced request gives up, so a batch waiting for it looks again."""


_WAKE = _Wake()


class Arrival:
    """A request on its way to the batcher: settled when it is queued, or closed when it gives up
    (which wakes a batch waiting for it). Either happens once."""

    def __init__(self, release: Callable[[bool], None]) -> None:
        self._release: Callable[[bool], None] | None = release

    def queued(self) -> None:
        self._settle(wake=False)

    def close(self) -> None:
        self._settle(wake=True)

    def _settle(self, *, wake: bool) -> None:
        release, self._release = self._release, None
        if release is not None:
            release(wake)

    def __enter__(self) -> Arrival:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MicroBatcher(Generic[Output]):
    def __init__(
        self,
        run_batch: BatchFn[Output],
        *,
        max_batch_clips: int,
        max_wait_s: float,
        max_queue_clips: int,
        observe: BatchObserver | None = None,
        run_embedded: BatchFn[Output] | None = None,
    ) -> None:
        """``run_embedded`` (optional) runs a batch in which a request asked for embeddings
        (``submit(..., embed=True)``): the whole batch, in one call, instead of ``run_batch``."""
        self._run_batch = run_batch
        self._run_embedded = run_embedded
        self._max_batch = max_batch_clips
        self._max_wait = max_wait_s
        self._max_queue = max_queue_clips
        self._observe = observe
        # SimpleQueue: a C queue, cheaper per put and get than queue.Queue (no Condition)
        self._jobs: queue.SimpleQueue[_Job[Output] | _Wake | None] = queue.SimpleQueue()
        self._queued_clips = 0
        self._queued_requests = 0  # queued or in the batch being run
        self._arriving = 0  # requests announced and not queued yet
        # Requests in the server when the last forward pass ended: the company a batch waits for
        self._expected = 1
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._seconds_per_clip = 0.01  # running estimate, for Retry-After

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="model", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(timeout)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def queued_clips(self) -> int:
        return self._queued_clips

    def arriving(self) -> Arrival:
        """Announce a request that will :meth:`submit` soon: until it does (or the arrival is
        closed), a batch being formed waits for it, at most ``max_wait_s``."""
        with self._lock:
            self._arriving += 1
        return Arrival(self._arrived)

    def _arrived(self, wake: bool) -> None:
        with self._lock:
            self._arriving -= 1
            if wake:  # gave up (refused, failed, went away): not company to wait for
                self._expected = max(1, self._expected - 1)
        if wake:
            self._jobs.put(_WAKE)  # a batch waiting for this request stops waiting

    async def submit(
        self, clips: np.ndarray, *, arrival: Arrival | None = None, embed: bool = False
    ) -> Output:
        """The output for ``clips``, from the batch they join; with ``embed`` (and a
        ``run_embedded``) that batch is run by ``run_embedded``."""
        if self._thread is None:
            raise BatcherStopped("the model thread is not running")
        n = int(clips.shape[0])
        with self._lock:
            if self._queued_clips + n > self._max_queue and self._queued_clips > 0:
                raise Overloaded(max(1.0, self._queued_clips * self._seconds_per_clip))
            self._queued_clips += n
            self._queued_requests += 1
        loop = asyncio.get_running_loop()
        job: _Job[Output] = _Job(clips=clips, future=loop.create_future(), loop=loop, embed=embed)
        self._jobs.put(job)
        if arrival is not None:
            arrival.queued()  # after the put: never seen as neither queued nor on its way
        return await job.future

    def _loop(self) -> None:
        pending: _Job[Output] | None = None
        while True:
            first = pending or self._jobs.get()
            pending = None
            if first is None:
                return
            if isinstance(first, _Wake):
                continue
            batch = [first]
            clips = first.clips.shape[0]
            deadline = time.perf_counter() + self._max_wait
            while clips < self._max_batch:
                wait = deadline - time.perf_counter()
                try:
                    if wait > 0 and (self._arriving > 0 or len(batch) < self._expected):
                        job = self._jobs.get(timeout=wait)
                    else:
                        job = self._jobs.get_nowait()  # nobody on the way: what is queued
                except queue.Empty:
                    break
                if isinstance(job, _Wake):
                    continue  # an announced request gave up: look again at who is on the way
                if job is None:
                    self._jobs.put(None)  # stop after this batch
                    break
                if clips + job.clips.shape[0] > self._max_batch:
                    pending = job  # opens the next batch
                    break
                batch.append(job)
                clips += job.clips.shape[0]
            self._run(batch, clips)

    def _run(self, batch: list[_Job[Output]], clips: int) -> None:
        started = time.perf_counter()
        try:
            run = self._run_batch
            if self._run_embedded is not None and any(job.embed for job in batch):
                run = self._run_embedded
            outputs = run([job.clips for job in batch])
            error: BaseException | None = None
        except Exception as exc:  # delivered to every waiting request; the thread lives on
            outputs, error = [], exc
        seconds = time.perf_counter() - started
        with self._lock:
            self._expected = self._queued_requests + self._arriving
            self._queued_clips -= clips
            self._queued_requests -= len(batch)
        self._seconds_per_clip = 0.8 * self._seconds_per_clip + 0.2 * seconds / max(1, clips)
        if self._observe is not None:
            with contextlib.suppress(Exception):
                self._observe(clips, seconds)
        # One hand-off per event loop, not per request: the batch's requests resume in the same
        # loop turn (so their Redis writes coalesce) and the loop is woken once.
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome[Output]]] = {}
        for index, job in enumerate(batch):
            value = outputs[index] if error is None else None
            by_loop.setdefault(job.loop, []).append((job.future, value, error))
        for loop, outcomes in by_loop.items():
            loop.call_soon_threadsafe(_resolve, outcomes)


_Outcome = tuple[asyncio.Future[Output], Output | None, BaseException | None]


def _resolve(outcomes: list[_Outcome[Output]]) -> None:
    for future, value, error in outcomes:
        if future.done():  # the request was cancelled (client went away)
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)  # type: ignore[arg-type]
