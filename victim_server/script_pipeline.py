"""Lua script calls made in the same turn of the event loop go to Redis as one pipelined write.

On this kind of host a round trip to Redis costs far more in system calls and wake-ups than
the script it runs (a socket write and a read on each side, each a VM exit under
virtualisation). The classify path makes several independent script calls that are ready at
the same moment: the reserves of requests that arrive together, and, after a micro-batch's
forward pass, its detector update and its Idempotency-Key commit. :class:`ScriptPipeline` sends
every call submitted during one loop turn in one pipeline (no MULTI: each script is atomic on
its own and none depends on another's reply), so they cost one round trip.

A call that is alone is sent as a plain EVALSHA. A caller that is cancelled does not cancel the
pipeline: its script still runs (as a call already written to the socket would).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

from victim_server.coalesce import fail

Arg = str | bytes | int | float


@dataclass
class _Call:
    script: PipelinedScript
    keys: Sequence[str]
    args: Sequence[Arg]
    future: asyncio.Future[Any] = field(repr=False)


class PipelinedScript:
    """A registered script; ``await script(keys=..., args=...)`` like redis-py's scripts."""

    def __init__(self, pipeline: ScriptPipeline, text: str) -> None:
        self._pipeline = pipeline
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()

    async def __call__(self, keys: Sequence[str] = (), args: Sequence[Arg] = ()) -> Any:
        return await self._pipeline.submit(self, keys, args)


class ScriptPipeline:
    """Every script call of one loop turn, on one connection of ``redis``, in one write."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._pending: list[_Call] = []
        self._running: set[asyncio.Task[None]] = set()
        self.round_trips = 0  # pipelines and lone calls sent (read by tests)

    def register(self, text: str) -> PipelinedScript:
        return PipelinedScript(self, text)

    async def submit(
        self, script: PipelinedScript, keys: Sequence[str], args: Sequence[Arg]
    ) -> Any:
        loop = asyncio.get_running_loop()
        if not self._pending:
            loop.call_soon(self._flush)
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append(_Call(script, keys, args, future))
        return await future

    def _flush(self) -> None:
        calls, self._pending = self._pending, []
        task = asyncio.ensure_future(self._send(calls))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _send(self, calls: list[_Call]) -> None:
        try:
            results = await self._run(calls)
            missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
            if missing:  # Redis restarted or flushed its scripts: load them, send those again
                for text in {calls[i].script.text for i in missing}:
                    await self.redis.script_load(text)
                again = await self._run([calls[i] for i in missing])
                for i, result in zip(missing, again, strict=True):
                    results[i] = result
        except BaseException as exc:  # the whole write failed: every caller gets it
            for call in calls:
                fail(call.future, exc)
            if not isinstance(exc, Exception):
                raise
            return
        for call, result in zip(calls, results, strict=True):
            if isinstance(result, ResponseError):
                fail(call.future, result)
            elif not call.future.done():
                call.future.set_result(result)

    async def _run(self, calls: list[_Call]) -> list[Any]:
        """One round trip; a script's error reply is its result, not raised."""
        self.round_trips += 1
        if len(calls) == 1:
            call = calls[0]
            try:
                return [
                    await self.redis.evalsha(
                        call.script.sha, len(call.keys), *call.keys, *call.args
                    )
                ]
            except ResponseError as exc:
                return [exc]
        async with self.redis.pipeline(transaction=False) as pipe:
            for call in calls:
                pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
            results: list[Any] = await pipe.execute(raise_on_error=False)
        return results
