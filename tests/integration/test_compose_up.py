"""`docker compose up` for real: deploy/range_up.py builds the images from Debian packages and
runs the stack on a fresh clone (no .env) to the attacker's report. Slow (the first run builds
a base image and downloads PyTorch's wheels); skipped where no Docker engine answers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUDGET = 300


def _docker_engine() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _docker_engine(), reason="no Docker engine answers `docker info`")
def test_compose_up_on_a_fresh_clone_reaches_the_report(tmp_path: Path) -> None:
    results_file = tmp_path / "compose_up.json"
    out = tmp_path / "out"
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "deploy" / "range_up.py"),
            "--budget",
            str(BUDGET),
            "--project",
            "vidsteal-range-up-test",
            "--out",
            str(out),
            "--json",
            str(results_file),
        ],
        capture_output=True,
        text=True,
        timeout=3 * 3600,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    results = json.loads(results_file.read_text())
    assert results["attacker_exit_code"] == 0
    assert {"secrets", "redis", "victim", "attacker", "prometheus"} <= set(results["services"])
    assert set(results["services"]) | set(results["skipped"]) >= {"grafana"}
    final = results["report"]["final"]
    assert final["queries"] == BUDGET and final["clips"] > 0
    assert results["report"]["collect"]["paid"] == BUDGET
    # Secrets were generated on this first start and no log line holds one.
    assert results["secrets_in_logs"] == []
    assert any("api_key: generated" in line for line in results["secrets_log"])
    report = json.loads((out / "report.json").read_text())
    assert report["final"] == final
