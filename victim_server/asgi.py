"""ASGI entry for uvicorn (``--factory``): settings from ``VIDSTEAL_*`` environment variables."""

from __future__ import annotations

from fastapi import FastAPI

from victim_server.app import create_app
from victim_server.settings import Settings


def app_from_env() -> FastAPI:
    return create_app(Settings())  # type: ignore[call-arg]  # admin_token comes from the env
