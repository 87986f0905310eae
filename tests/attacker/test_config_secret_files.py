"""``${NAME}`` in an attack config falls back to the file named by NAME_FILE (compose secrets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from attacker.config import ConfigError, load_config

CONFIG = """
budget: 10
victim: {url: "http://victim:8000", api_key: "${VIDSTEAL_API_KEY}"}
query: {source: {kind: noise}}
"""
API_KEY = "vsk_attack_0123456789abcdef0123"


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("VIDSTEAL_API_KEY", raising=False)
    monkeypatch.delenv("VIDSTEAL_API_KEY_FILE", raising=False)
    path = tmp_path / "attack.yaml"
    path.write_text(CONFIG)
    return path


def test_key_is_read_from_name_file(
    config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "api_key").write_text(API_KEY + "\n")
    monkeypatch.setenv("VIDSTEAL_API_KEY_FILE", str(tmp_path / "api_key"))
    assert load_config(config_file, {"out": str(tmp_path / "run")}).victim.api_key == API_KEY
    # The variable itself, when set, wins (as in the env-only setup).
    monkeypatch.setenv("VIDSTEAL_API_KEY", "vsk_other_0123456789abcdef0123")
    config = load_config(config_file, {"out": str(tmp_path / "run")})
    assert config.victim.api_key == "vsk_other_0123456789abcdef0123"


def test_missing_key_and_unreadable_file_are_one_line_errors(
    config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match=r"\$\{VIDSTEAL_API_KEY\} but it is not set"):
        load_config(config_file)
    monkeypatch.setenv("VIDSTEAL_API_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="VIDSTEAL_API_KEY_FILE: cannot read"):
        load_config(config_file)
