"""``python -m vidsteal range``: the whole range on one machine, without Docker.

Starts a redis-server (its own data directory, a free port, AOF on) and the victim (embedded
model), creates an attack key and an evaluation key through the admin API, runs the attacker
with the default config, prints where the report and the plot are, and stops everything it
started -- also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from vidsteal.processes import REPO, start_redis, start_victim

DEFAULT_CONFIG = REPO / "examples" / "range_default.yaml"


@dataclass(frozen=True)
class RangeOptions:
    budget: int = 5000
    config: Path = DEFAULT_CONFIG
    output: str = "probs"
    eval_clips: int = 1000
    workdir: Path = REPO / ".range"
    runs: Path = REPO / "runs"
    seed: int = 0


def _create_key(url: str, admin_token: str, **plan: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{url}/admin/keys",
        json=plan,
        timeout=30,
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    response.raise_for_status()
    created: dict[str, Any] = response.json()
    return created


@contextmanager
def _terminate_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt, so the same cleanup runs as for Ctrl-C."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_range(options: RangeOptions) -> int:
    started = time.perf_counter()
    admin_token = secrets.token_hex(24)
    redis_dir = options.workdir / "redis"
    shutil.rmtree(redis_dir, ignore_errors=True)
    run_dir = options.runs / f"range-{datetime.now():%Y%m%d-%H%M%S}"
    started_processes: list[Any] = []
    attacker: subprocess.Popen[bytes] | None = None
    with _terminate_on_sigterm():
        try:
            redis = start_redis(redis_dir, appendonly=True)
            started_processes.append(redis)
            print(f"[range] redis-server on {redis.url} (data in {redis_dir})", flush=True)
            victim = start_victim(
                redis.url, options.workdir / "victim.log", admin_token=admin_token
            )
            started_processes.append(victim)
            print(f"[range] victim on {victim.url} (log: {victim.log_path})", flush=True)
            attack = _create_key(
                victim.url,
                admin_token,
                budget=options.budget,
                output=options.output,
                name="range-attack",
            )
            evaluation = _create_key(
                victim.url,
                admin_token,
                budget=options.eval_clips,
                output="label",
                name="range-eval",
            )
            print(
                f"[range] attack key {attack['key_id']} ({options.budget} queries, "
                f"{options.output}); eval key {evaluation['key_id']}",
                flush=True,
            )
            attacker = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "attacker",
                    "run",
                    str(options.config),
                    "--victim-url",
                    victim.url,
                    "--api-key",
                    attack["api_key"],
                    "--eval-api-key",
                    evaluation["api_key"],
                    "--budget",
                    str(options.budget),
                    "--redis-url",
                    redis.url,
                    "--out",
                    str(run_dir),
                    "--seed",
                    str(options.seed),
                ],
                cwd=REPO,
                stdout=subprocess.PIPE,
            )
            assert attacker.stdout is not None
            summary_line = attacker.stdout.read().decode().strip().splitlines()
            code = attacker.wait()
            if code != 0:
                print(f"[range] the attacker failed (exit {code})", file=sys.stderr)
                return code
            summary = json.loads(summary_line[-1])
            minutes = (time.perf_counter() - started) / 60
            print(
                f"[range] done in {minutes:.1f} min: top-1 fidelity "
                f"{summary['top1_fidelity']:.3f} after {summary['queries']} queries"
            )
            print(f"[range] report: {summary['report']}")
            print(f"[range] plot:   {summary['plot']}")
            print(f"[range] student: {summary['student']}")
            return 0
        except KeyboardInterrupt:
            print("\n[range] interrupted: stopping everything", file=sys.stderr)
            return 130
        finally:
            if attacker is not None and attacker.poll() is None:
                attacker.terminate()
                try:
                    attacker.wait(15)
                except subprocess.TimeoutExpired:
                    attacker.kill()
            for process in reversed(started_processes):
                process.stop()
