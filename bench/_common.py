"""Shared bits of the benchmarks: result files and small statistics."""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=RESULTS.parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def host_speed(repeats: int = 5) -> dict[str, float]:
    """Milliseconds (best of ``repeats``) for two fixed single-thread workloads: a pure-Python
    loop and a 256x256 float32 matrix product chain. The host's speed varies by about 3x from
    hour to hour on the shared machine these benches run on, so absolute times from different
    results files are only comparable next to this reference, taken when each file is written."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((256, 256), dtype=np.float32)

    def python_loop() -> None:
        total = 0
        for i in range(200_000):
            total += i * i
        if total < 0:
            raise AssertionError

    def matmul() -> None:
        b = a
        for _ in range(8):
            b = (a @ b) * 0.01

    best: dict[str, float] = {}
    for label, work in (("python_loop_ms", python_loop), ("numpy_matmul_ms", matmul)):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            work()
            times.append((time.perf_counter() - start) * 1000)
        best[label] = round(min(times), 3)
    return best


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name,
        "measured_at": datetime.now(UTC).isoformat(),
        "git_commit": git_commit(),
        "machine": platform.machine(),
        "cpus": __import__("os").cpu_count(),
        "host_speed": host_speed(),
        **data,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
