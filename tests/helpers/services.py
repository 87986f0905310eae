"""Test-side wrappers around the range launcher's process helpers."""

from __future__ import annotations

import os
from pathlib import Path

from vidsteal.processes import (
    REPO,
    RedisProcess,
    VictimProcess,
    free_port,
    start_redis,
)
from vidsteal.processes import start_victim as _start_victim

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
LiveVictim = VictimProcess

__all__ = [
    "ADMIN_TOKEN",
    "REPO",
    "LiveVictim",
    "RedisProcess",
    "free_port",
    "start_redis",
    "start_victim",
]


def start_victim(
    redis_url: str,
    log_path: Path,
    *,
    port: int | None = None,
    extra_env: dict[str, str] | None = None,
    workers: int = 1,
) -> VictimProcess:
    """A victim with the tests' admin token and one torch thread (tests share 2 cores)."""
    env = {"VIDSTEAL_THREADS": os.environ.get("VIDSTEAL_THREADS", "1"), **(extra_env or {})}
    return _start_victim(
        redis_url, log_path, admin_token=ADMIN_TOKEN, port=port, extra_env=env, workers=workers
    )
