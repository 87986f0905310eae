"""Routes whose endpoint takes the request and returns the response itself.

FastAPI still matches, documents (from the decorator's arguments: ``response_model``,
``responses``, ``openapi_extra``) and wraps the route in the app's middleware and exception
handlers (problem+json), but solves no dependencies and validates or serializes nothing on the
way. That layer was about a fifth of the CPU of a one-clip ``POST /v1/classify`` with a no-op
model (py-spy, bench/victim_throughput.py's no-op victim): worth it on the hot path only.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.responses import Response

Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


class DirectRoute(APIRoute):
    """``APIRouter(route_class=DirectRoute)``: each endpoint is ``async def f(request) ->
    Response`` and reads its own headers; declare what it reads in ``openapi_extra``."""

    def get_route_handler(self) -> Endpoint:
        endpoint: Endpoint = self.endpoint
        return endpoint


def header_param_doc(name: str, *, max_length: int) -> dict[str, Any]:
    """The OpenAPI entry FastAPI writes for an optional ``Header(alias=name, max_length=...)``."""
    return {
        "in": "header",
        "name": name,
        "required": False,
        "schema": {
            "anyOf": [{"maxLength": max_length, "type": "string"}, {"type": "null"}],
            "title": name,
        },
    }


def optional_header(request: Request, name: str, *, max_length: int) -> str | None:
    """The header's value, or None; over ``max_length`` characters the 422 that FastAPI's own
    validation of ``Header(alias=name, max_length=...)`` gives."""
    value = request.headers.get(name)
    if value is not None and len(value) > max_length:
        raise RequestValidationError(
            [
                {
                    "type": "string_too_long",
                    "loc": ("header", name),
                    "msg": f"String should have at most {max_length} characters",
                    "input": value,
                    "ctx": {"max_length": max_length},
                }
            ]
        )
    return value
