"""Request dependencies as named aliases, so handlers read like sentences."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.problems import ProblemType
from victim_server.accounting.keys import ApiKey
from victim_server.api.problems import problem
from victim_server.services import Services

_bearer = HTTPBearer(auto_error=False, description="API key, or the admin token on /admin")
_BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}
# The security requirement FastAPI writes for a route that depends on ``_bearer`` (for routes
# that read credentials themselves: victim_server/api/direct.py).
BEARER_SECURITY: dict[str, list[str]] = {_bearer.scheme_name: []}


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_services(request: Request) -> Services:
    # async: FastAPI runs a plain-def dependency in a worker thread (a thread hop per request)
    return services_of(request)


ServicesDep = Annotated[Services, Depends(get_services)]
CredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def get_api_key(
    request: Request, services: ServicesDep, credentials: CredentialsDep
) -> ApiKey:
    """The key's record as it is in Redis now."""
    key = await services.keys.authenticate(_secret(services, credentials))
    return usable_key(request, services, key[0])


async def api_key_secret(request: Request, services: Services) -> str:
    """The bearer API key the request carries, or the 401 problem (as ``get_api_key``)."""
    return _secret(services, await _bearer(request))


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
