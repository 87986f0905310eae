"""RFC 9457 problem+json responses for every error the API can give."""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.problems import PROBLEM_CONTENT_TYPE, ProblemType, VidStealProblem, make_problem

log = logging.getLogger("vidsteal.victim")

_STATUS_TO_KIND = {
    401: ProblemType.UNAUTHORIZED,
    404: ProblemType.NOT_FOUND,
    400: ProblemType.MALFORMED_REQUEST,  # an unparsable body (clip routes raise BAD_CLIP)
    405: ProblemType.METHOD_NOT_ALLOWED,
    409: ProblemType.CONFLICT,
    413: ProblemType.PAYLOAD_TOO_LARGE,
    415: ProblemType.UNSUPPORTED_MEDIA_TYPE,
    422: ProblemType.VALIDATION_ERROR,
    503: ProblemType.OVERLOADED,
}


def problem(
    kind: ProblemType,
    detail: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> VidStealProblem:
    """Build the exception a handler raises to answer with this problem."""
    return VidStealProblem.of(kind, detail, headers=headers, **extensions)


def problem_response(error: VidStealProblem, instance: str | None = None) -> Response:
    body = error.problem
    if instance and body.instance is None:
        body = body.model_copy(update={"instance": instance})
    return Response(
        content=body.to_json(),
        status_code=body.status,
        media_type=PROBLEM_CONTENT_TYPE,
        headers=error.headers,
    )


def allowed_methods(request: Request, starlette_allow: str | None) -> list[str]:
    """Every method served at this path. Starlette's 405 names only the first route that matched
    the path, but FastAPI registers one route per method (GET and POST ``/admin/keys`` are two),
    so the methods come from the served OpenAPI document (the contract), plus Starlette's own
    ``Allow`` for routes left out of the document."""
    methods = {m.strip().upper() for m in (starlette_allow or "").split(",") if m.strip()}
    path = request.scope.get("path", "")
    for template, item in request.app.openapi().get("paths", {}).items():
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            methods.update(m.upper() for m in item if m.lower() in _HTTP_METHODS)
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


_HTTP_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options", "trace"})


def install_problem_handlers(app: FastAPI) -> None:
    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, VidStealProblem)
        return problem_response(exc, request.url.path)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        detail = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
        error = VidStealProblem(make_problem(ProblemType.VALIDATION_ERROR, detail, errors=errors))
        return problem_response(error, request.url.path)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        kind = _STATUS_TO_KIND.get(exc.status_code, ProblemType.VALIDATION_ERROR)
        made = make_problem(kind, str(exc.detail))
        made = made.model_copy(update={"status": exc.status_code})
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            allow = headers.pop("Allow", None) or headers.pop("allow", None)
            headers["Allow"] = ", ".join(allowed_methods(request, allow))
        return problem_response(VidStealProblem(made, headers=headers), request.url.path)

    async def on_redis(request: Request, exc: Exception) -> Response:
        log.warning("redis unavailable: %s", exc)
        error = problem(
            ProblemType.ACCOUNTING_UNAVAILABLE,
            "the accounting store is unreachable; try again shortly",
            headers={"Retry-After": "1"},
            retry_after=1.0,
        )
        return problem_response(error, request.url.path)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        error = problem(ProblemType.INFERENCE_FAILED, f"internal error: {type(exc).__name__}")
        return problem_response(error, request.url.path)

    app.add_exception_handler(VidStealProblem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RedisError, on_redis)
    app.add_exception_handler(Exception, on_unexpected)
