"""RFC 9457 problem details: the victim's error bodies, shared so the attacker can read them.

Every error the victim returns is ``application/problem+json`` whose ``type`` is a stable URN,
``urn:vidsteal:problem:<slug>``; clients branch on :class:`ProblemType`, never on ``title`` or
``detail`` wording. Exceptions:

- :class:`VidStealProblem` carries a :class:`Problem` plus response headers (``Retry-After``).
  The victim raises it and its exception handler renders it; the attacker's client raises it
  from a problem response, so both sides catch the same type.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from enum import StrEnum
from http import HTTPStatus
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.codec import ClipDecodeError

__all__ = [
    "PROBLEM_CONTENT_TYPE",
    "PROBLEM_TYPE_PREFIX",
    "Problem",
    "ProblemType",
    "VidStealProblem",
    "make_problem",
    "parse_problem",
    "problem_from_clip_error",
]

PROBLEM_CONTENT_TYPE: Final = "application/problem+json"
PROBLEM_TYPE_PREFIX: Final = "urn:vidsteal:problem:"


class ProblemType(StrEnum):
    """Stable problem slugs; each has an HTTP ``status``, a ``default_title`` and a ``uri``."""

    BUDGET_EXHAUSTED = "budget-exhausted"
    DETECTION_BLOCKED = "detection-blocked"
    DETECTION_THROTTLED = "detection-throttled"
    KEY_REVOKED = "key-revoked"
    UNAUTHORIZED = "unauthorized"
    ADMIN_UNAUTHORIZED = "admin-unauthorized"
    BAD_CLIP = "bad-clip"
    MALFORMED_REQUEST = "malformed-request"
    UNSUPPORTED_MEDIA_TYPE = "unsupported-media-type"
    PAYLOAD_TOO_LARGE = "payload-too-large"
    INVALID_CLIP = "invalid-clip"
    VALIDATION_ERROR = "validation-error"
    OVERLOADED = "overloaded"
    ACCOUNTING_UNAVAILABLE = "accounting-unavailable"
    INFERENCE_FAILED = "inference-failed"
    NOT_FOUND = "not-found"
    METHOD_NOT_ALLOWED = "method-not-allowed"
    CONFLICT = "conflict"

    @property
    def status(self) -> int:
        return _SPECS[self][0]

    @property
    def default_title(self) -> str:
        """The problem ``title`` (named so as not to shadow ``str.title``)."""
        return _SPECS[self][1]

    @property
    def uri(self) -> str:
        return PROBLEM_TYPE_PREFIX + self.value

    @classmethod
    def from_uri(cls, uri: str) -> ProblemType | None:
        """The member whose ``uri`` is ``uri``; ``None`` for any other type URI."""
        if not uri.startswith(PROBLEM_TYPE_PREFIX):
            return None
        try:
            return cls(uri.removeprefix(PROBLEM_TYPE_PREFIX))
        except ValueError:
            return None


_SPECS: Final[dict[ProblemType, tuple[int, str]]] = {
    ProblemType.BUDGET_EXHAUSTED: (429, "Query budget exhausted"),
    ProblemType.DETECTION_BLOCKED: (403, "Blocked by extraction detection"),
    ProblemType.DETECTION_THROTTLED: (429, "Throttled by extraction detection"),
    ProblemType.KEY_REVOKED: (403, "API key revoked"),
    ProblemType.UNAUTHORIZED: (401, "Missing or invalid API key"),
    ProblemType.ADMIN_UNAUTHORIZED: (401, "Missing or invalid admin token"),
    ProblemType.BAD_CLIP: (400, "Malformed clip payload"),
    ProblemType.MALFORMED_REQUEST: (400, "Malformed request"),
    ProblemType.UNSUPPORTED_MEDIA_TYPE: (415, "Unsupported media type or encoding"),
    ProblemType.PAYLOAD_TOO_LARGE: (413, "Payload too large"),
    ProblemType.INVALID_CLIP: (422, "Invalid clip content"),
    ProblemType.VALIDATION_ERROR: (422, "Request validation failed"),
    ProblemType.OVERLOADED: (503, "Server overloaded"),
    ProblemType.ACCOUNTING_UNAVAILABLE: (503, "Accounting store unavailable"),
    ProblemType.INFERENCE_FAILED: (500, "Inference failed"),
    ProblemType.NOT_FOUND: (404, "Not found"),
    ProblemType.METHOD_NOT_ALLOWED: (405, "Method not allowed"),
    ProblemType.CONFLICT: (409, "Conflict"),
}

_CLIP_ERROR_KINDS: Final = {
    400: ProblemType.BAD_CLIP,
    413: ProblemType.PAYLOAD_TOO_LARGE,
    415: ProblemType.UNSUPPORTED_MEDIA_TYPE,
    422: ProblemType.INVALID_CLIP,
}


class Problem(BaseModel):
    """An RFC 9457 problem details object, with VidSteal's optional extension members.

    Unknown extension members are kept (``extra="allow"``). Serialise with :meth:`to_json`,
    which leaves out members that are ``None``.
    """

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int = Field(ge=100, le=599)
    detail: str | None = None
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None
    retry_after: float | None = Field(default=None, ge=0)
    budget: dict[str, Any] | None = None

    @property
    def kind(self) -> ProblemType | None:
        """The :class:`ProblemType` named by ``type``, or ``None`` for a foreign type."""
        return ProblemType.from_uri(self.type)

    def to_json(self) -> bytes:
        """The response body (UTF-8 JSON, ``None`` members left out)."""
        return self.model_dump_json(exclude_none=True).encode("utf-8")


def make_problem(kind: ProblemType | str, detail: str | None, **extensions: Any) -> Problem:
    """A :class:`Problem` of ``kind`` (member or slug) with its stable type, title and status."""
    member = ProblemType(kind)
    return Problem(
        type=member.uri,
        title=member.default_title,
        status=member.status,
        detail=detail,
        **extensions,
    )


def problem_from_clip_error(error: ClipDecodeError, **extensions: Any) -> Problem:
    """The problem a server answers a refused clip payload with (status kept from the error)."""
    kind = _CLIP_ERROR_KINDS.get(error.status, ProblemType.BAD_CLIP)
    return make_problem(kind, error.reason, **extensions)


_CORE_MEMBERS: Final = ("type", "title", "detail", "instance")


def parse_problem(status: int, body: bytes | str) -> Problem | None:
    """Read a response body as a problem; ``None`` when it is not problem-shaped.

    Problem-shaped means a JSON object with a string ``type`` or ``title``. The HTTP ``status``
    wins over the body's advisory ``status`` member (RFC 9457 section 3.1.2); a missing title
    is filled from the known type or the status phrase. Extension members of the wrong shape
    are dropped rather than failing the whole parse.
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or not (
        isinstance(data.get("type"), str) or isinstance(data.get("title"), str)
    ):
        return None
    if not 100 <= status <= 599:
        return None
    fields: dict[str, Any] = dict(data)
    fields["status"] = status
    if not isinstance(fields.get("type"), str):
        fields["type"] = "about:blank"
    if not isinstance(fields.get("title"), str):
        fields["title"] = _default_title(fields["type"], status)
    try:
        return Problem.model_validate(fields)
    except ValidationError:
        core = {k: v for k, v in fields.items() if k in _CORE_MEMBERS and isinstance(v, str)}
        return Problem.model_validate({**core, "status": status})


def _default_title(type_uri: str, status: int) -> str:
    kind = ProblemType.from_uri(type_uri)
    if kind is not None:
        return kind.default_title
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


class VidStealProblem(Exception):
    """An error that is (or will be) an RFC 9457 response.

    ``headers`` are response headers to send with it; when the problem has ``retry_after`` and
    no ``Retry-After`` header is given, one is added (whole seconds, rounded up).
    """

    def __init__(self, problem: Problem, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(problem.detail or problem.title)
        self.problem = problem
        self.headers: dict[str, str] = dict(headers or {})
        has_retry_header = any(name.lower() == "retry-after" for name in self.headers)
        if problem.retry_after is not None and not has_retry_header:
            self.headers["Retry-After"] = str(math.ceil(problem.retry_after))

    @classmethod
    def of(
        cls,
        kind: ProblemType | str,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> VidStealProblem:
        """Shorthand for ``VidStealProblem(make_problem(kind, detail, **extensions))``."""
        return cls(make_problem(kind, detail, **extensions), headers=headers)

    @property
    def status(self) -> int:
        return self.problem.status

    @property
    def kind(self) -> ProblemType | None:
        return self.problem.kind

    def __str__(self) -> str:
        text = f"{self.problem.status} {self.problem.title}"
        return f"{text}: {self.problem.detail}" if self.problem.detail else text
