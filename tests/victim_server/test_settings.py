"""Settings refuse insecure admin tokens and read VIDSTEAL_* variables."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from victim_server.settings import Settings


@pytest.mark.parametrize("token", ["", "changeme", "admin", "short-token"])
def test_insecure_admin_tokens_are_refused(token: str) -> None:
    with pytest.raises(ValidationError, match="VIDSTEAL_ADMIN_TOKEN"):
        Settings(admin_token=token)  # type: ignore[arg-type]


def test_missing_admin_token_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIDSTEAL_ADMIN_TOKEN", raising=False)
    with pytest.raises(ValidationError):
        Settings()  # type: ignore[call-arg]


def test_environment_variables_configure_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDSTEAL_ADMIN_TOKEN", "a-long-enough-secret-token")
    monkeypatch.setenv("VIDSTEAL_PORT", "9123")
    monkeypatch.setenv("VIDSTEAL_MAX_BATCH_CLIPS", "7")
    settings = Settings()  # type: ignore[call-arg]
    assert settings.port == 9123 and settings.max_batch_clips == 7
