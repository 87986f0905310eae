"""Start and stop real redis-server and uvicorn processes for tests and benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisProcess:
    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_redis(
    data_dir: Path, *, port: int | None = None, appendonly: bool = False
) -> RedisProcess:
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
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError(f"redis-server did not start on port {port}") from None
            time.sleep(0.05)
    client.close()
    return RedisProcess(process=process, port=port, data_dir=data_dir)


@dataclass
class LiveVictim:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start_victim(
    redis_url: str,
    log_path: Path,
    *,
    port: int | None = None,
    extra_env: dict[str, str] | None = None,
    workers: int = 1,
    timeout_s: float = 60.0,
) -> LiveVictim:
    port = port or free_port()
    env = {
        **os.environ,
        "VIDSTEAL_ADMIN_TOKEN": ADMIN_TOKEN,
        "VIDSTEAL_REDIS_URL": redis_url,
        "VIDSTEAL_HOST": "127.0.0.1",
        "VIDSTEAL_PORT": str(port),
        "VIDSTEAL_THREADS": os.environ.get("VIDSTEAL_THREADS", "1"),
        **(extra_env or {}),
    }
    log_file = log_path.open("wb")
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
    victim = LiveVictim(process=process, port=port, log_path=log_path, env=env)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"victim exited early:\n{victim.log()}")
        try:
            if httpx.get(f"{victim.url}/readyz", timeout=1.0).status_code == 200:
                return victim
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    victim.stop()
    raise RuntimeError(f"victim not ready within {timeout_s}s:\n{victim.log()}")
