"""redact_url: what run directories and manifests may keep of a URL."""

from __future__ import annotations

import pytest

from shared.urls import redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:s3cret@redis:6379/0", "redis://:***@redis:6379/0"),
        ("redis://default:s3cret@127.0.0.1:6379/0", "redis://default:***@127.0.0.1:6379/0"),
        ("http://alice:pw@victim:8000/", "http://alice:***@victim:8000/"),
        ("https://ghp_TOKEN@victim.example", "https://***@victim.example"),
        ("http://victim:8000/v1?token=abc&x=1", "http://victim:8000/v1?token=***&x=1"),
        ("rediss://h:6380/0?password=pw", "rediss://h:6380/0?password=***"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("not a url", "not a url"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert "s3cret" not in redact_url(url)
