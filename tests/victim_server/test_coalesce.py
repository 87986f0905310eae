"""Coalescer: calls of one group in one loop turn run as one, in order; failures reach all."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from victim_server.coalesce import Coalescer


async def test_calls_in_one_turn_run_once_per_group_in_order() -> None:
    runs: list[tuple[str, list[int]]] = []

    async def run(group: str, items: Sequence[int]) -> list[int]:
        runs.append((group, list(items)))
        await asyncio.sleep(0)
        return [item * 10 for item in items]

    together: Coalescer[str, int, int] = Coalescer(run)
    results = await asyncio.gather(
        together("a", 1), together("b", 2), together("a", 3), together("a", 4)
    )
    assert results == [10, 20, 30, 40]
    assert sorted(runs) == [("a", [1, 3, 4]), ("b", [2])]
    assert await together("a", 5) == 50  # a later turn is a new run
    assert runs[-1] == ("a", [5])


async def test_a_failed_run_fails_every_caller_and_a_cancelled_caller_keeps_its_item() -> None:
    seen: list[int] = []

    async def run(group: str, items: Sequence[int]) -> list[int]:
        await asyncio.sleep(0.01)
        seen.extend(items)
        if 0 in items:
            raise ValueError("boom")
        return list(items)

    together: Coalescer[str, int, int] = Coalescer(run)
    outcomes = await asyncio.gather(together("g", 0), together("g", 1), return_exceptions=True)
    assert all(isinstance(o, ValueError) for o in outcomes)
    waiting = asyncio.ensure_future(together("g", 7))
    await asyncio.sleep(0.001)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.sleep(0.05)
    assert seen[-1] == 7  # run anyway: a charged clip is still observed, an answer stored
