"""Idle HTTP connections: the victim keeps them longer than clients, so reuse never races a close.

httpx drops an idle pooled connection after 5 s, and uvicorn's own default closes it after 5 s
too; a request sent on a connection the server is closing fails with a read error (CI saw one).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
from helpers.services import LiveVictim, start_victim

from victim_server.settings import Settings

REQUEST = b"GET /healthz HTTP/1.1\r\nHost: victim\r\nConnection: keep-alive\r\n\r\n"


def _ask(conn: socket.socket) -> bytes:
    """Send one request and read one whole (small, Content-Length) answer; b'' when closed."""
    conn.sendall(REQUEST)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = conn.recv(4096)
        if not chunk:  # closed mid-answer: not a whole answer
            return b""
        body += chunk
    return head


def _idle_then_ask(victim: LiveVictim, idle_s: float) -> tuple[bytes, bytes]:
    with socket.create_connection(("127.0.0.1", victim.port), timeout=10) as conn:
        first = _ask(conn)
        time.sleep(idle_s)
        try:
            second = _ask(conn)
        except ConnectionResetError:
            second = b""
        return first, second


def test_server_keeps_idle_connections_longer_than_clients_do() -> None:
    client_expiry = httpx.Limits().keepalive_expiry
    assert client_expiry is not None
    assert Settings.model_fields["keep_alive_s"].default > client_expiry


def test_a_connection_idle_past_uvicorns_default_is_still_answered(
    live_victim: LiveVictim,
) -> None:
    first, second = _idle_then_ask(live_victim, 6.0)
    assert first.startswith(b"HTTP/1.1 200")
    assert second.startswith(b"HTTP/1.1 200")


def test_keep_alive_setting_reaches_the_server(redis_url: str, tmp_path: Path) -> None:
    victim = start_victim(
        redis_url, tmp_path / "victim.log", extra_env={"VIDSTEAL_KEEP_ALIVE_S": "1"}
    )
    try:
        first, second = _idle_then_ask(victim, 2.5)
    finally:
        victim.stop()
    assert first.startswith(b"HTTP/1.1 200")
    assert second == b""
