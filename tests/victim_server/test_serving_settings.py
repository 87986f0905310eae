"""Process settings the victim applies at start-up: freed memory kept for reuse, the model
served as a frozen trace on the CPU, start-up objects frozen out of the cyclic GC (all on by
default)."""

from __future__ import annotations

import gc

import pytest
from fastapi import FastAPI

import victim_server.app as app_module
from tests.helpers.services import ADMIN_TOKEN
from victim_server.app import create_app
from victim_server.settings import Settings


def _settings(redis_url: str, **overrides: bool) -> Settings:
    """One-thread victim settings on the test Redis, with ``overrides``."""
    return Settings(  # type: ignore[call-arg]
        admin_token=ADMIN_TOKEN, redis_url=redis_url, threads=1, **overrides
    )


async def _start(app: FastAPI) -> bool:
    """Runs the app's lifespan; whether it served a traced model."""
    async with app.router.lifespan_context(app):
        return bool(app.state.services.runner.traced)


@pytest.mark.parametrize("reuse", [True, False])
async def test_the_lifespan_applies_the_setting(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, reuse: bool
) -> None:
    calls: list[bool] = []
    monkeypatch.setattr(app_module, "reuse_freed_memory", lambda: calls.append(True) or True)
    await _start(create_app(_settings(redis_url, reuse_freed_memory=reuse)))
    assert calls == ([True] if reuse else [])


def test_it_is_on_by_default() -> None:
    assert Settings(admin_token=ADMIN_TOKEN).reuse_freed_memory  # type: ignore[call-arg]


@pytest.mark.parametrize("trace", [True, False])
async def test_the_model_is_served_traced_unless_turned_off(redis_url: str, trace: bool) -> None:
    assert await _start(create_app(_settings(redis_url, trace_model=trace))) is trace


def test_tracing_is_on_by_default() -> None:
    assert Settings(admin_token=ADMIN_TOKEN).trace_model  # type: ignore[call-arg]


@pytest.mark.parametrize("freeze", [True, False])
async def test_start_up_objects_are_frozen_while_serving_and_released_after(
    redis_url: str, freeze: bool
) -> None:
    app = create_app(_settings(redis_url, trace_model=False, freeze_startup_objects=freeze))
    assert gc.get_freeze_count() == 0
    async with app.router.lifespan_context(app):
        frozen = gc.get_freeze_count()
        model = app.state.services.runner.model
        # The model is in the permanent generation, which no collection walks (and which
        # gc.get_objects, listing the three collected generations, leaves out).
        assert (frozen > 10_000) is freeze
        assert gc.is_tracked(model)
        assert any(o is model for o in gc.get_objects()) is not freeze
    assert gc.get_freeze_count() == 0  # unfrozen at shutdown


def test_freezing_is_on_by_default() -> None:
    assert Settings(admin_token=ADMIN_TOKEN).freeze_startup_objects  # type: ignore[call-arg]
