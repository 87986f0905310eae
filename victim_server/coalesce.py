"""Calls made in the same turn of the event loop, with the same group, run as one.

The requests of one micro-batch resume together when its forward pass ends; each then updates
its key's detector and stores its answer for Idempotency-Key replay. :class:`Coalescer` turns
those N Redis calls into one (one script over the N items, in call order), which is what a
request costs on the wire when it is alone, and N times less CPU when it is not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

Group = TypeVar("Group", bound=Hashable)
Item = TypeVar("Item")
Result = TypeVar("Result")

RunGroup = Callable[[Group, Sequence[Item]], Awaitable[Sequence[Result]]]


class Coalescer(Generic[Group, Item, Result]):
    """``await coalescer(group, item)`` -> ``run(group, items)[i]`` for this call's ``i``.

    ``run`` gets every item submitted for ``group`` during one loop turn, in order, and returns
    one result per item; an exception it raises is every caller's. A caller that is cancelled
    meanwhile does not cancel the group: its item is still run (a charged clip is observed, an
    answer is stored)."""

    def __init__(self, run: RunGroup[Group, Item, Result]) -> None:
        self._run = run
        self._pending: dict[Group, list[tuple[Item, asyncio.Future[Result]]]] = {}
        self._running: set[asyncio.Task[None]] = set()

    async def __call__(self, group: Group, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        calls = self._pending.get(group)
        if calls is None:
            calls = self._pending[group] = []
            loop.call_soon(self._flush, group)
        future: asyncio.Future[Result] = loop.create_future()
        calls.append((item, future))
        return await future

    def _flush(self, group: Group) -> None:
        calls = self._pending.pop(group)
        task = asyncio.ensure_future(self._run_group(group, calls))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run_group(
        self, group: Group, calls: list[tuple[Item, asyncio.Future[Result]]]
    ) -> None:
        try:
            results = await self._run(group, [item for item, _ in calls])
        except BaseException as exc:  # every waiting caller gets it
            for _, future in calls:
                fail(future, exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(calls, results, strict=True):
            if not future.done():
                future.set_result(result)


def fail(future: asyncio.Future[Result], exc: BaseException) -> None:
    """Hand ``exc`` to a caller still waiting on ``future`` (a cancellation cancels it)."""
    if future.done():
        return
    if isinstance(exc, asyncio.CancelledError):
        future.cancel()
    else:
        future.set_exception(exc)
