"""Liveness, readiness and the Prometheus scrape endpoint."""

from __future__ import annotations

import hmac

from fastapi import APIRouter
from fastapi.responses import Response
from redis.exceptions import RedisError

from shared.problems import ProblemType
from victim_server.api.deps import CredentialsDep, ServicesDep
from victim_server.api.openapi import problem_responses
from victim_server.api.problems import problem

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses=problem_responses(503))
async def readyz(services: ServicesDep) -> dict[str, str]:
    """The model is loaded and its thread runs, and Redis answers."""
    if not services.batcher.running:
        raise problem(
            ProblemType.OVERLOADED, "model thread not running", headers={"Retry-After": "1"}
        )
    await services.redis.ping()
    return {"status": "ready", "model": services.model_config.model_tag}


@router.get("/metrics", include_in_schema=False)
async def metrics(services: ServicesDep, credentials: CredentialsDep) -> Response:
    required = services.settings.metrics_token
    given = credentials.credentials if credentials is not None else ""
    if required is not None and not hmac.compare_digest(
        given.encode(), required.get_secret_value().encode()
    ):
        raise problem(
            ProblemType.UNAUTHORIZED,
            "/metrics needs 'Authorization: Bearer <metrics token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    # Budgets are read from Redis at scrape time: with several workers the last gauge write of
    # any one process may be stale (requests finish out of reservation order).
    try:
        for key in await services.keys.list():
            services.metrics.budget_remaining.labels(key.key_id).set(key.remaining)
    except RedisError:
        pass  # the scrape still answers; budgets keep their last known values
    body, content_type = services.metrics.exposition()
    return Response(content=body, media_type=content_type)
