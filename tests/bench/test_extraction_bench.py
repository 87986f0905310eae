"""bench/extraction.py refuses, before it starts Redis, a victim or any job, a peer attack whose
library is not installed: a missing bench extra once cost a 95-minute run its results file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "extraction.py"

# Runs the bench as __main__ with ART made unimportable, whether or not it is installed.
WITHOUT_ART = (
    "import runpy, sys; sys.modules['art'] = None; "
    f"sys.argv = [{str(SCRIPT)!r}] + sys.argv[1:]; "
    f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')"
)


def _run(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_ART, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)},
    )


def test_a_peer_without_its_library_stops_before_any_job(tmp_path: Path) -> None:
    done = _run(
        "--attacks",
        "probs-stacked-affine",
        "knockoffnets-art",
        "--results",
        "must_not_exist",
        tmp_path=tmp_path,
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last == (
        "error: knockoffnets-art needs adversarial-robustness-toolbox (pip install -e '.[bench]')"
    )
    assert "redis" not in done.stdout.lower()
    assert not (ROOT / "bench" / "results" / "must_not_exist.json").exists()
