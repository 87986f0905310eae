"""The served OpenAPI document, true to the service: every error is documented as the
``application/problem+json`` it is, and bounds known only once the model is loaded (``top_k``
at most the number of classes) are written into the request schemas."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from shared.problems import PROBLEM_CONTENT_TYPE, Problem

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_DESCRIPTIONS = {
    400: "Malformed request (bad clip payload, bad JSON, bad header)",
    401: "Missing or invalid credentials",
    403: "Key revoked, or blocked by extraction detection",
    404: "No such resource (or the key was revoked)",
    409: "A request with this Idempotency-Key is still in progress",
    413: "Body, clip count, decoded size or frame size over a limit",
    415: "Unsupported content type or content encoding",
    422: "Well-formed but invalid content or parameters",
    429: "Query budget exhausted, or throttled after a detection alarm",
    500: "Inference failed (nothing was charged)",
    503: "Overloaded or accounting store unavailable; see Retry-After",
}


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for routes that answer these statuses with problem+json."""
    return {
        code: {
            "description": _DESCRIPTIONS[code],
            "content": {PROBLEM_CONTENT_TYPE: {"schema": _PROBLEM_REF}},
        }
        for code in codes
    }


def install_openapi(app: FastAPI) -> None:
    """Replace ``app.openapi`` with one that adds the Problem schema and model-bound limits."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Problem"] = Problem.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        services = getattr(app.state, "services", None)
        if services is None:
            return schema  # not started yet: served later with the model's bounds, then cached
        classes = services.model_config.num_classes
        _bound_integer(components, "KeyCreate", "top_k", classes)
        _bound_integer(components, "DefensePolicy", "top_k", classes)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _bound_integer(components: dict[str, Any], model: str, field: str, maximum: int) -> None:
    prop = components.get(model, {}).get("properties", {}).get(field)
    if prop is None:
        return
    for branch in [prop, *prop.get("anyOf", [])]:
        if branch.get("type") == "integer":
            branch["maximum"] = maximum
