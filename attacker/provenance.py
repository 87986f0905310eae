"""What a run was made of: resolved config (secrets redacted), git commit, library versions."""

from __future__ import annotations

import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from attacker.config import AttackConfig
from shared.urls import REDACTED, redact_url

_SECRET_FIELDS = {"api_key", "eval_api_key"}


def git_commit(cwd: Path | None = None) -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}{'-dirty' if dirty else ''}"


def redacted_config(config: AttackConfig) -> dict[str, Any]:
    """The config as written to the run directory: API keys and every URL's password (Redis,
    victim) replaced by ``***``."""
    data = config.model_dump(mode="json")
    for name in _SECRET_FIELDS:
        if data["victim"].get(name):
            data["victim"][name] = REDACTED
    redacted: dict[str, Any] = _redact_urls(data)
    return redacted


def _redact_urls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _redact_urls(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_urls(v) for v in value]
    if isinstance(value, str) and "://" in value:
        return redact_url(value)
    return value


def write_provenance(run_dir: Path, config: AttackConfig) -> dict[str, Any]:
    import torch

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.resolved.yaml").write_text(
        yaml.safe_dump(redacted_config(config), sort_keys=False)
    )
    info = {
        "started_at": datetime.now(UTC).isoformat(),
        "git_commit": git_commit(Path(__file__).resolve().parent),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
    }
    return info
