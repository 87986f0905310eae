"""Secrets from files (docker compose's `secrets` volume): VIDSTEAL_<NAME>_FILE, api_key_file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from victim_server.settings import BootstrapKey, Settings

TOKEN = "file-token-0123456789abcdef"
API_KEY = "vsk_filekey_0123456789abcdef0123"


@pytest.fixture(autouse=True)
def _no_vidsteal_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("VIDSTEAL_"):
            monkeypatch.delenv(name)


def test_admin_token_is_read_from_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "admin_token").write_text(TOKEN + "\n")
    monkeypatch.setenv("VIDSTEAL_ADMIN_TOKEN_FILE", str(tmp_path / "admin_token"))
    assert Settings().admin_token.get_secret_value() == TOKEN  # type: ignore[call-arg]


def test_a_weak_token_in_a_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "admin_token").write_text("changeme")
    monkeypatch.setenv("VIDSTEAL_ADMIN_TOKEN_FILE", str(tmp_path / "admin_token"))
    with pytest.raises(ValidationError, match="ADMIN_TOKEN"):
        Settings()  # type: ignore[call-arg]


def test_token_and_token_file_together_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "admin_token").write_text(TOKEN)
    monkeypatch.setenv("VIDSTEAL_ADMIN_TOKEN_FILE", str(tmp_path / "admin_token"))
    monkeypatch.setenv("VIDSTEAL_ADMIN_TOKEN", "other-token-0123456789abcdef")
    with pytest.raises(ValueError, match="not both"):
        Settings()  # type: ignore[call-arg]


def test_bootstrap_key_reads_its_secret_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "api_key").write_text(API_KEY + "\n")
    key = BootstrapKey.model_validate({"api_key_file": str(tmp_path / "api_key"), "budget": 10})
    assert key.api_key == API_KEY
    assert "api_key_file" not in key.model_dump()
    with pytest.raises(ValidationError, match="not both"):
        BootstrapKey.model_validate(
            {"api_key": API_KEY, "api_key_file": str(tmp_path / "api_key"), "budget": 10}
        )
    (tmp_path / "bad").write_text("not-a-key")
    with pytest.raises(ValidationError, match="api_key"):
        BootstrapKey.model_validate({"api_key_file": str(tmp_path / "bad"), "budget": 10})
