"""Secrets an operator could leak (issue 13.7): the /metrics scrape (every key id and budget),
and passwords in URLs written to run directories."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import yaml
from helpers.services import ADMIN_TOKEN

from attacker.config import AttackConfig
from attacker.provenance import redacted_config
from victim_server.app import create_app
from victim_server.settings import Settings

METRICS_TOKEN = "metrics-token-0123456789abcdef"


@pytest.fixture
async def guarded_victim(redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        admin_token=ADMIN_TOKEN,  # type: ignore[arg-type]
        metrics_token=METRICS_TOKEN,  # type: ignore[arg-type]
        redis_url=redis_url,
        threads=1,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://victim") as client:
            yield client


async def test_metrics_token_guards_the_scrape(guarded_victim: httpx.AsyncClient) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ):
        response = await guarded_victim.get("/metrics", headers=headers)
        assert response.status_code == 401
        assert response.headers["content-type"].startswith("application/problem+json")
    ok = await guarded_victim.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert ok.status_code == 200 and "vidsteal_" in ok.text


async def test_metrics_stay_open_without_a_token(victim_app: httpx.AsyncClient) -> None:
    assert (await victim_app.get("/metrics")).status_code == 200


def test_a_weak_metrics_token_is_refused() -> None:
    with pytest.raises(ValueError, match="METRICS_TOKEN"):
        Settings(admin_token=ADMIN_TOKEN, metrics_token="changeme")  # type: ignore[arg-type]


def test_resolved_config_keeps_no_password(tmp_path: Path) -> None:
    config = AttackConfig.model_validate(
        {
            "budget": 10,
            "redis_url": "redis://:redis-pass-123@redis:6379/0",
            "victim": {
                "url": "http://alice:victim-pass-456@victim:8000",
                "api_key": "vsk_abc_secretsecretsecretsecret",
            },
            "out": str(tmp_path),
            "query": {"source": {"kind": "noise"}},
        }
    )
    text = yaml.safe_dump(redacted_config(config))
    for secret in ("redis-pass-123", "victim-pass-456", "secretsecret"):
        assert secret not in text
    data = yaml.safe_load(text)
    assert data["redis_url"] == "redis://:***@redis:6379/0"
    assert data["victim"]["url"] == "http://alice:***@victim:8000"
