"""The compose range's secrets: made once, kept, overridable, 0600, never printed by init."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from vidsteal.compose_secrets import BY_NAME, SECRETS, ensure_secrets, read_secret

REPO = Path(__file__).resolve().parents[2]


def _init(directory: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m vidsteal.compose_secrets init` as the compose service runs it."""
    environ = {k: v for k, v in os.environ.items() if k not in {s.variable for s in SECRETS}}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "vidsteal.compose_secrets", "--dir", str(directory), "init"],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def _values(directory: Path) -> dict[str, str]:
    return {secret.name: read_secret(directory, secret.name) for secret in SECRETS}


def test_first_start_generates_every_secret_as_a_0600_file(tmp_path: Path) -> None:
    directory = tmp_path / "secrets"
    assert ensure_secrets(directory, environ={}) == {s.name: "generated" for s in SECRETS}
    values = _values(directory)
    assert re.fullmatch(r"[0-9a-f]{48}", values["admin_token"])
    assert re.fullmatch(r"vsk_attack_[0-9a-f]{48}", values["api_key"])
    assert re.fullmatch(r"vsk_eval_[0-9a-f]{48}", values["eval_api_key"])
    assert re.fullmatch(r"[0-9a-f]{32}", values["grafana_admin_password"])
    for secret in SECRETS:
        assert stat.S_IMODE((directory / secret.name).stat().st_mode) == 0o600
    assert sorted(p.name for p in directory.iterdir()) == sorted(BY_NAME), "no temp files left"
    # A second directory gets other values: nothing is a constant.
    other = tmp_path / "other"
    ensure_secrets(other, environ={})
    assert set(_values(other).values()).isdisjoint(values.values())


def test_later_starts_keep_the_secrets(tmp_path: Path) -> None:
    ensure_secrets(tmp_path, environ={})
    first = _values(tmp_path)
    (tmp_path / "api_key").chmod(0o644)  # loosened by hand: put back to 0600
    assert ensure_secrets(tmp_path, environ={}) == {s.name: "kept" for s in SECRETS}
    assert _values(tmp_path) == first
    assert stat.S_IMODE((tmp_path / "api_key").stat().st_mode) == 0o600


def test_a_value_in_the_environment_overrides_its_file(tmp_path: Path) -> None:
    ensure_secrets(tmp_path, environ={})
    before = _values(tmp_path)
    token = "override-token-0123456789abcdef"
    done = ensure_secrets(
        tmp_path, environ={"VIDSTEAL_ADMIN_TOKEN": token, "GRAFANA_ADMIN_PASSWORD": ""}
    )
    assert done["admin_token"] == "overridden" and done["grafana_admin_password"] == "kept"
    after = _values(tmp_path)
    assert after["admin_token"] == token
    assert {k: v for k, v in after.items() if k != "admin_token"} == {
        k: v for k, v in before.items() if k != "admin_token"
    }
    assert stat.S_IMODE((tmp_path / "admin_token").stat().st_mode) == 0o600
    assert (
        ensure_secrets(tmp_path, environ={"VIDSTEAL_ADMIN_TOKEN": token})["admin_token"] == "kept"
    )


def test_an_unknown_owner_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such secret"):
        ensure_secrets(tmp_path, environ={}, owners={"grafana_password": 472})


def test_init_never_prints_a_secret_and_show_prints_one(tmp_path: Path) -> None:
    token = "override-token-0123456789abcdef"
    outputs = [_init(tmp_path), _init(tmp_path), _init(tmp_path, {"VIDSTEAL_ADMIN_TOKEN": token})]
    values = _values(tmp_path)
    assert values["admin_token"] == token
    for result in outputs:
        for value in values.values():
            assert value not in result.stdout + result.stderr
        # The parts after the key id prefix are secret too.
        assert not re.search(r"[0-9a-f]{16,}", result.stdout + result.stderr)
    assert "api_key: generated" in outputs[0].stdout
    assert "api_key: kept" in outputs[1].stdout
    assert "admin_token: overridden from VIDSTEAL_ADMIN_TOKEN" in outputs[2].stdout
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "vidsteal.compose_secrets",
            "--dir",
            str(tmp_path),
            "show",
            "api_key",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert shown.stdout == values["api_key"] + "\n"
