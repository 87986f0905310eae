"""RFC 9457 problem types, the Problem model, parse_problem and VidStealProblem."""

from __future__ import annotations

import json

import pytest

from shared.codec import ClipDecodeError
from shared.problems import (
    PROBLEM_CONTENT_TYPE,
    Problem,
    ProblemType,
    VidStealProblem,
    make_problem,
    parse_problem,
    problem_from_clip_error,
)

EXPECTED_STATUS = {
    "budget-exhausted": 429,
    "detection-blocked": 403,
    "detection-throttled": 429,
    "key-revoked": 403,
    "unauthorized": 401,
    "admin-unauthorized": 401,
    "bad-clip": 400,
    "malformed-request": 400,
    "unsupported-media-type": 415,
    "payload-too-large": 413,
    "invalid-clip": 422,
    "validation-error": 422,
    "overloaded": 503,
    "accounting-unavailable": 503,
    "inference-failed": 500,
    "not-found": 404,
    "method-not-allowed": 405,
    "conflict": 409,
}


def test_problem_type_table_is_complete_and_stable() -> None:
    assert {kind.value: kind.status for kind in ProblemType} == EXPECTED_STATUS
    for kind in ProblemType:
        assert kind.uri == f"urn:vidsteal:problem:{kind.value}"
        assert kind.default_title
        assert ProblemType.from_uri(kind.uri) is kind
        assert kind == kind.value  # a str enum: compares and formats as its slug
        assert f"{kind}" == kind.value


@pytest.mark.parametrize(
    "uri", ["about:blank", "urn:vidsteal:problem:nope", "budget-exhausted", "urn:other:x"]
)
def test_from_uri_returns_none_for_foreign_types(uri: str) -> None:
    assert ProblemType.from_uri(uri) is None


def test_make_problem_fills_type_title_status() -> None:
    problem = make_problem(
        ProblemType.BUDGET_EXHAUSTED, "0 of 1000 queries left", budget={"remaining": 0}
    )
    assert problem.type == "urn:vidsteal:problem:budget-exhausted"
    assert problem.status == 429
    assert problem.title == ProblemType.BUDGET_EXHAUSTED.default_title
    assert problem.detail == "0 of 1000 queries left"
    assert problem.budget == {"remaining": 0}
    assert problem.kind is ProblemType.BUDGET_EXHAUSTED
    assert make_problem("overloaded", None).status == 503
    with pytest.raises(ValueError):
        make_problem("no-such-problem", "x")


def test_problem_serialisation_omits_nones_and_keeps_extensions() -> None:
    assert PROBLEM_CONTENT_TYPE == "application/problem+json"
    problem = make_problem(
        ProblemType.INVALID_CLIP,
        "dtype float32, expected uint8",
        instance="/v1/classify",
        errors=[{"loc": ["body"], "msg": "bad"}],
        request_id="abc123",
    )
    body = json.loads(problem.to_json())
    assert body == {
        "type": "urn:vidsteal:problem:invalid-clip",
        "title": ProblemType.INVALID_CLIP.default_title,
        "status": 422,
        "detail": "dtype float32, expected uint8",
        "instance": "/v1/classify",
        "errors": [{"loc": ["body"], "msg": "bad"}],
        "request_id": "abc123",
    }
    again = Problem.model_validate_json(problem.to_json())
    assert again == problem
    assert again.model_extra == {"request_id": "abc123"}


def test_problem_validates_its_members() -> None:
    with pytest.raises(ValueError):
        Problem(title="x", status=42)
    with pytest.raises(ValueError):
        Problem(title="x", status=503, retry_after=-1)


def test_parse_problem_reads_a_rendered_problem() -> None:
    sent = make_problem(ProblemType.OVERLOADED, "queue full", retry_after=2.5)
    got = parse_problem(503, sent.to_json())
    assert got == sent
    assert got is not None and got.kind is ProblemType.OVERLOADED
    assert parse_problem(503, sent.to_json().decode()) == sent


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>502 Bad Gateway</html>",
        b'{"detail": "Not Found"}',  # FastAPI's default error body
        b'{"detail": [{"loc": ["body"], "msg": "field required"}]}',
        b"[1, 2, 3]",
        b'"just a string"',
        b'{"type": 5, "title": null}',
        b"\xff\xfe\x00",
    ],
)
def test_parse_problem_returns_none_for_non_problems(body: bytes) -> None:
    assert parse_problem(500, body) is None


def test_parse_problem_trusts_the_http_status_and_fills_a_missing_title() -> None:
    body = json.dumps({"type": "urn:vidsteal:problem:detection-blocked", "status": 200})
    problem = parse_problem(403, body)
    assert problem is not None
    assert problem.status == 403
    assert problem.title == ProblemType.DETECTION_BLOCKED.default_title
    foreign = parse_problem(418, json.dumps({"type": "https://example.com/teapot"}))
    assert foreign is not None
    assert foreign.title == "I'm a Teapot"
    assert foreign.kind is None
    untyped = parse_problem(404, json.dumps({"title": "Gone fishing"}))
    assert untyped is not None
    assert untyped.type == "about:blank"


def test_parse_problem_drops_extensions_of_the_wrong_shape() -> None:
    body = json.dumps(
        {
            "type": "urn:vidsteal:problem:validation-error",
            "title": "Request validation failed",
            "detail": "bad field",
            "errors": "not a list",
            "retry_after": "soon",
        }
    )
    problem = parse_problem(422, body)
    assert problem is not None
    assert problem.kind is ProblemType.VALIDATION_ERROR
    assert problem.detail == "bad field"
    assert problem.errors is None
    assert problem.retry_after is None


def test_vidsteal_problem_carries_problem_and_headers() -> None:
    error = VidStealProblem.of(ProblemType.OVERLOADED, "queue full", retry_after=1.2)
    assert isinstance(error, Exception)
    assert error.status == 503
    assert error.kind is ProblemType.OVERLOADED
    assert error.headers == {"Retry-After": "2"}  # whole seconds, rounded up
    assert str(error) == f"503 {ProblemType.OVERLOADED.default_title}: queue full"
    explicit = VidStealProblem(
        make_problem("overloaded", None, retry_after=9), headers={"retry-after": "1"}
    )
    assert explicit.headers == {"retry-after": "1"}
    assert str(explicit) == f"503 {ProblemType.OVERLOADED.default_title}"
    plain = VidStealProblem(make_problem("not-found", "no such key"))
    assert plain.headers == {}
    with pytest.raises(VidStealProblem) as info:
        raise plain
    assert info.value.problem.detail == "no such key"


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, ProblemType.BAD_CLIP),
        (413, ProblemType.PAYLOAD_TOO_LARGE),
        (415, ProblemType.UNSUPPORTED_MEDIA_TYPE),
        (422, ProblemType.INVALID_CLIP),
    ],
)
def test_clip_errors_map_to_problems(status: int, kind: ProblemType) -> None:
    problem = problem_from_clip_error(ClipDecodeError("what was wrong", status=status))
    assert problem.kind is kind
    assert problem.status == status
    assert problem.detail == "what was wrong"
