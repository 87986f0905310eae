"""Start and stop the range's processes: redis-server and victim servers on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@dataclass
class RedisProcess:
    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        _stop(self.process)


def start_redis(
    data_dir: Path, *, port: int | None = None, appendonly: bool = False, timeout_s: float = 10.0
) -> RedisProcess:
    """redis-server on 127.0.0.1 with its own data directory (AOF everysec when asked)."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data_dir),
        "--save",
        "",
        "--appendonly",
        "yes" if appendonly else "no",
        "--appendfsync",
        "everysec",
        "--daemonize",
        "no",
        "--loglevel",
        "warning",
    ]
    try:
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    except FileNotFoundError:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)") from None
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            _stop(process)
            raise RuntimeError(f"redis-server did not start on port {port}")
        time.sleep(0.05)
    return RedisProcess(process=process, port=port, data_dir=data_dir)


@dataclass
class VictimProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        _stop(self.process)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start_victim(
    redis_url: str,
    log_path: Path,
    *,
    admin_token: str,
    port: int | None = None,
    extra_env: dict[str, str] | None = None,
    workers: int = 1,
    timeout_s: float = 90.0,
) -> VictimProcess:
    """``python -m victim_server serve`` on 127.0.0.1, returned once /readyz answers 200."""
    port = port or free_port()
    env = {
        **os.environ,
        "VIDSTEAL_ADMIN_TOKEN": admin_token,
        "VIDSTEAL_REDIS_URL": redis_url,
        "VIDSTEAL_HOST": "127.0.0.1",
        "VIDSTEAL_PORT": str(port),
        **(extra_env or {}),
    }
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "victim_server",
                "serve",
                "--workers",
                str(workers),
                "--log-level",
                "warning",
            ],
            cwd=REPO,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    victim = VictimProcess(process=process, port=port, log_path=log_path, env=env)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"victim exited early:\n{victim.log()[-3000:]}")
        try:
            if httpx.get(f"{victim.url}/readyz", timeout=1.0).status_code == 200:
                return victim
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    victim.stop()
    raise RuntimeError(f"victim not ready within {timeout_s}s:\n{victim.log()[-3000:]}")
