"""The micro-batcher: batches concurrent requests, bounds its queue, survives model errors."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from victim_server.inference.batcher import MicroBatcher, Overloaded


class _Recorder:
    def __init__(self, fail_on: int | None = None, gate: threading.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.fail_on = fail_on
        self.gate = gate

    def __call__(self, requests: list[np.ndarray]) -> list[np.ndarray]:
        if self.gate is not None:
            self.gate.wait(5)
        self.batches.append([r.shape[0] for r in requests])
        if self.fail_on is not None and any(r[0, 0] == self.fail_on for r in requests):
            raise RuntimeError("model broke")
        return [r * 2 for r in requests]


def _req(n: int, value: int = 1) -> np.ndarray:
    return np.full((n, 1), value)


async def test_concurrent_requests_share_batches_and_get_their_own_answers() -> None:
    recorder = _Recorder()
    batcher = MicroBatcher(recorder, max_batch_clips=8, max_wait_s=0.05, max_queue_clips=100)
    batcher.start()
    try:
        outputs = await asyncio.gather(*[batcher.submit(_req(2, i)) for i in range(8)])
    finally:
        batcher.stop()
    for i, out in enumerate(outputs):
        np.testing.assert_array_equal(out, _req(2, 2 * i))
    assert sum(len(b) for b in recorder.batches) == 8
    assert max(sum(b) for b in recorder.batches) <= 8
    assert len(recorder.batches) < 8  # some requests were batched together


async def test_model_errors_reach_the_caller_and_the_thread_lives_on() -> None:
    batcher = MicroBatcher(
        _Recorder(fail_on=7), max_batch_clips=4, max_wait_s=0.0, max_queue_clips=100
    )
    batcher.start()
    try:
        with pytest.raises(RuntimeError, match="model broke"):
            await batcher.submit(_req(1, 7))
        np.testing.assert_array_equal(await batcher.submit(_req(1, 3)), _req(1, 6))
    finally:
        batcher.stop()


async def test_queue_bound_answers_overloaded() -> None:
    gate = threading.Event()
    batcher = MicroBatcher(
        _Recorder(gate=gate), max_batch_clips=4, max_wait_s=0.0, max_queue_clips=4
    )
    batcher.start()
    try:
        first = asyncio.ensure_future(batcher.submit(_req(4)))
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded) as info:
            await batcher.submit(_req(1))
        assert info.value.retry_after_s >= 1.0
        gate.set()
        await first
        np.testing.assert_array_equal(await batcher.submit(_req(1)), _req(1, 2))
    finally:
        gate.set()
        batcher.stop()


async def test_a_batch_waits_for_an_announced_request_and_not_for_nobody() -> None:
    gate = threading.Event()
    recorder = _Recorder(gate=gate)
    batcher = MicroBatcher(recorder, max_batch_clips=8, max_wait_s=5.0, max_queue_clips=100)
    batcher.start()
    try:
        gate.set()
        alone = await asyncio.wait_for(batcher.submit(_req(1, 1)), timeout=2.0)  # no 5 s wait
        np.testing.assert_array_equal(alone, _req(1, 2))

        arrival = batcher.arriving()  # a second request is being decoded meanwhile
        first = asyncio.ensure_future(batcher.submit(_req(1, 3)))
        await asyncio.sleep(0.3)
        assert not first.done()  # held for the announced request
        second = await batcher.submit(_req(2, 4), arrival=arrival)
        np.testing.assert_array_equal(await first, _req(1, 6))
        np.testing.assert_array_equal(second, _req(2, 8))
        assert recorder.batches[-1] == [1, 2]  # one forward pass for both

        with batcher.arriving():
            pending = asyncio.ensure_future(batcher.submit(_req(1, 5)))
            await asyncio.sleep(0.1)
        # the announced request gave up: the batch runs without it, well before max_wait
        np.testing.assert_array_equal(await asyncio.wait_for(pending, timeout=4.0), _req(1, 10))
    finally:
        batcher.stop()


async def test_a_batch_waits_for_the_clients_that_kept_the_server_busy() -> None:
    """Three requests were in the server when a forward pass ended: the next batch waits (at
    most max_wait) for a third before it runs, though nobody has announced one; a request that
    announces itself and gives up lowers that expectation."""
    gate = threading.Event()
    recorder = _Recorder(gate=gate)
    batcher = MicroBatcher(recorder, max_batch_clips=8, max_wait_s=5.0, max_queue_clips=100)
    batcher.start()
    try:
        first = [asyncio.ensure_future(batcher.submit(_req(1, 0)))]
        await asyncio.sleep(0.2)  # in the (held) model; two more queue behind it
        first += [asyncio.ensure_future(batcher.submit(_req(1, i))) for i in (1, 2)]
        await asyncio.sleep(0.1)
        gate.set()
        await first[0]
        await asyncio.sleep(0.3)
        assert not first[1].done() and not first[2].done()  # held for a third
        third = await batcher.submit(_req(1, 5))
        np.testing.assert_array_equal(third, _req(1, 10))
        await asyncio.gather(*first)
        assert recorder.batches == [[1], [1, 1, 1]]

        pair = [asyncio.ensure_future(batcher.submit(_req(1, i))) for i in range(2)]
        await asyncio.sleep(0.3)
        assert not any(p.done() for p in pair)  # three expected again
        batcher.arriving().close()  # an announced request gave up: two are enough
        await asyncio.wait_for(asyncio.gather(*pair), timeout=4.0)
        assert recorder.batches[-1] == [1, 1]
    finally:
        batcher.stop()
