"""Request dependencies as named aliases, so handlers read like sentences."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.problems import ProblemType
from victim_server.accounting.keys import ApiKey
from victim_server.api.problems import problem
from victim_server.inference.batcher import Arrival
from victim_server.services import Services

_bearer = HTTPBearer(auto_error=False, description="API key, or the admin token on /admin")
_BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def get_services(request: Request) -> Services:
    # async: FastAPI runs a plain-def dependency in a worker thread (a thread hop per request)
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def announce_arrival(services: ServicesDep) -> AsyncIterator[Arrival]:
    """Tells the micro-batcher a request is on its way (closed when it is queued or ends), so
    a batch being formed waits for it instead of running without it."""
    with services.batcher.arriving() as arrival:
        yield arrival


ArrivalDep = Annotated[Arrival, Depends(announce_arrival)]
CredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def get_api_key(
    request: Request, services: ServicesDep, credentials: CredentialsDep
) -> ApiKey:
    """The key's record as it is in Redis now."""
    key = await services.keys.authenticate(_secret(services, credentials))
    return usable_key(request, services, key[0])


async def get_cached_api_key(
    request: Request, services: ServicesDep, credentials: CredentialsDep
) -> ApiKey:
    """The key's record, a per-process copy a few seconds old at most: for routes whose charge
    goes through the reserve script, which refuses a copy older than the record's revision."""
    key = await services.key_cache.authenticate(_secret(services, credentials))
    return usable_key(request, services, key)


def _secret(services: Services, credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or not credentials.credentials:
        services.metrics.queries.labels("-", "unauthorized").inc()
        raise problem(
            ProblemType.UNAUTHORIZED,
            "send 'Authorization: Bearer <api key>'",
            headers=_BEARER_CHALLENGE,
        )
    return credentials.credentials


def usable_key(request: Request, services: Services, key: ApiKey | None) -> ApiKey:
    """``key``, or the 401/403 problem for an unknown or revoked one."""
    if key is None:
        services.metrics.queries.labels("-", "unauthorized").inc()
        raise problem(ProblemType.UNAUTHORIZED, "unknown API key", headers=_BEARER_CHALLENGE)
    if key.revoked:
        services.metrics.queries.labels(key.key_id, "revoked").inc()
        raise problem(ProblemType.KEY_REVOKED, f"key {key.key_id} has been revoked")
    request.state.key_id = key.key_id
    return key


ApiKeyDep = Annotated[ApiKey, Depends(get_api_key)]
CachedApiKeyDep = Annotated[ApiKey, Depends(get_cached_api_key)]


async def require_admin(services: ServicesDep, credentials: CredentialsDep) -> None:
    expected = services.settings.admin_token.get_secret_value()
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise problem(
            ProblemType.ADMIN_UNAUTHORIZED,
            "admin routes need the admin token",
            headers=_BEARER_CHALLENGE,
        )


AdminDep = Depends(require_admin)
