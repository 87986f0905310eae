"""A TCP proxy for fault tests: stands between a client and redis-server on 127.0.0.1 and can
hold back replies, so a command runs in Redis while its caller times out."""

from __future__ import annotations

import asyncio
import contextlib
import socket


class StallProxy:
    """``await StallProxy(upstream_port).start()``; point clients at :attr:`url`.

    ``delay_replies(seconds, count=None)``: the next ``count`` reply chunks (all, when None) are
    held ``seconds`` before they are passed on. ``delay_replies_to(pattern, seconds, count)``:
    the reply to each of the next ``count`` requests containing ``pattern`` (e.g. a script's
    SHA-1) is held. Requests always go through at once, so the command runs in Redis.
    """

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._delay_s = 0.0
        self._delays_left: int | None = 0
        self._patterns: dict[bytes, tuple[float, int]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> StallProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        sock: socket.socket = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])
        return self

    def delay_replies(self, seconds: float, count: int | None = None) -> None:
        self._delay_s = seconds
        self._delays_left = count

    def delay_replies_to(self, pattern: bytes, seconds: float, count: int = 1) -> None:
        self._patterns[pattern] = (seconds, count)

    def clear(self) -> None:
        self._delay_s = 0.0
        self._delays_left = 0
        self._patterns.clear()

    def _matched_delay(self, chunk: bytes) -> float:
        for pattern, (seconds, count) in list(self._patterns.items()):
            if count > 0 and pattern in chunk:
                self._patterns[pattern] = (seconds, count - 1)
                return seconds
        return 0.0

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    def _reply_delay(self) -> float:
        if self._delays_left is None:
            return self._delay_s
        if self._delays_left > 0:
            self._delays_left -= 1
            return self._delay_s
        return 0.0

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        held: list[float] = []  # delays owed to replies of this connection, in order
        for task in (
            asyncio.create_task(self._pump(reader, up_writer, held, replies=False)),
            asyncio.create_task(self._pump(up_reader, writer, held, replies=True)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        held: list[float],
        *,
        replies: bool,
    ) -> None:
        try:
            while chunk := await reader.read(65536):
                if not replies and (matched := self._matched_delay(chunk)) > 0:
                    held.append(matched)
                if replies:
                    delay = max(self._reply_delay(), held.pop(0) if held else 0.0)
                    if delay > 0:
                        await asyncio.sleep(delay)
                writer.write(chunk)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)
