"""VictimClient: backoff honouring Retry-After, final errors, idempotency keys on the wire."""

from __future__ import annotations

import email.utils
import time

import httpx
import numpy as np
import pytest

from attacker.client import (
    Blocked,
    BudgetExhausted,
    RetriesExhausted,
    RetryPolicy,
    VictimClient,
    VictimError,
    parse_retry_after,
)
from shared.problems import PROBLEM_CONTENT_TYPE, ProblemType, make_problem

OK_BODY = {
    "model": "m",
    "output": "label",
    "results": [{"index": 1, "label": "b"}],
    "budget": {"key_id": "k", "budget": 5, "spent": 1, "remaining": 4},
    "request_id": "r",
}


def _problem(kind: ProblemType, headers: dict[str, str] | None = None) -> httpx.Response:
    body = make_problem(kind, "x").to_json()
    return httpx.Response(
        kind.status,
        content=body,
        headers={"content-type": PROBLEM_CONTENT_TYPE, **(headers or {})},
    )


class _Script:
    """Answers requests from a list, recording what was sent."""

    def __init__(self, answers: list[httpx.Response | Exception]) -> None:
        self.answers = answers
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _client(
    script: _Script, sleeps: list[float], attempts: int = 5, window_s: float = 0.0
) -> VictimClient:
    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    return VictimClient(
        "http://victim",
        "vsk_a_b",
        transport=httpx.MockTransport(script),
        retry=RetryPolicy(
            max_attempts=attempts, base_delay_s=0.1, jitter=0.0, retry_window_s=window_s
        ),
        sleep=fake_sleep,
    )


async def test_overload_and_throttling_are_retried_honouring_retry_after() -> None:
    script = _Script(
        [
            _problem(ProblemType.OVERLOADED, {"Retry-After": "3"}),
            _problem(ProblemType.DETECTION_THROTTLED, {"Retry-After": "7"}),
            httpx.ConnectError("refused"),
            httpx.Response(200, json=OK_BODY),
        ]
    )
    sleeps: list[float] = []
    async with _client(script, sleeps) as client:
        response = await client.classify(np.zeros((1, 2, 4, 4, 3), np.uint8), idempotency_key="K")
    assert response.results[0].index == 1
    assert sleeps == [3.0, 7.0, 0.4]  # Retry-After wins over shorter backoff; then 0.1 * 2**2
    assert {r.headers["Idempotency-Key"] for r in script.requests} == {"K"}


async def test_budget_exhausted_and_blocked_are_final() -> None:
    sleeps: list[float] = []
    async with _client(_Script([_problem(ProblemType.BUDGET_EXHAUSTED)]), sleeps) as client:
        with pytest.raises(BudgetExhausted):
            await client.classify(np.zeros((1, 2, 4, 4, 3), np.uint8), idempotency_key="K")
    async with _client(_Script([_problem(ProblemType.DETECTION_BLOCKED)]), sleeps) as client:
        with pytest.raises(Blocked):
            await client.classify(np.zeros((1, 2, 4, 4, 3), np.uint8), idempotency_key="K")
    async with _client(_Script([_problem(ProblemType.INVALID_CLIP)]), sleeps) as client:
        with pytest.raises(VictimError, match="422"):
            await client.classify(np.zeros((1, 2, 4, 4, 3), np.uint8), idempotency_key="K")
    assert sleeps == []


async def test_retries_run_out() -> None:
    sleeps: list[float] = []
    script = _Script([httpx.ReadTimeout("slow")] * 3)
    async with _client(script, sleeps, attempts=3) as client:
        with pytest.raises(RetriesExhausted, match="3 times") as caught:
            await client.budget()
    assert len(sleeps) == 2  # no wait after the last attempt
    assert not caught.value.throttled


async def test_a_victim_restart_is_waited_out_past_max_attempts() -> None:
    """Issue 13.3: refused connections, then 409 in-progress answers, for longer than
    max_attempts tries; the time window keeps the call alive and the answer arrives."""
    down: list[httpx.Response | Exception] = [httpx.ConnectError("refused")] * 10
    in_progress = [_problem(ProblemType.CONFLICT, {"Retry-After": "1"})] * 6
    script = _Script([*down, *in_progress, httpx.Response(200, json=OK_BODY)])
    sleeps: list[float] = []
    async with _client(script, sleeps, attempts=3, window_s=600) as client:
        answered = await client.classify_answer(
            np.zeros((1, 2, 4, 4, 3), np.uint8), idempotency_key="K"
        )
    assert answered.attempts == 17 and not answered.charged_earlier
    assert len(script.requests) == 17 and script.answers == []
    assert {r.headers["Idempotency-Key"] for r in script.requests} == {"K"}


async def test_the_retry_window_is_bounded_and_says_why_it_gave_up() -> None:
    throttled = [_problem(ProblemType.DETECTION_THROTTLED, {"Retry-After": "30"})] * 50
    sleeps: list[float] = []
    async with _client(_Script(throttled), sleeps, attempts=2, window_s=100) as client:
        with pytest.raises(RetriesExhausted) as caught:
            await client.classify(np.zeros((1, 2, 4, 4, 3), np.uint8), idempotency_key="K")
    assert caught.value.throttled and caught.value.status == 429
    assert 100 <= sum(sleeps) < 140  # waited out the window, then stopped


async def test_a_replay_on_the_first_attempt_was_charged_earlier() -> None:
    replayed = {**OK_BODY, "replayed": True}
    sleeps: list[float] = []
    async with _client(_Script([httpx.Response(200, json=replayed)]), sleeps) as client:
        first = await client.classify_answer(
            np.zeros((1, 2, 4, 4, 3), np.uint8), idempotency_key="K"
        )
    script = _Script([httpx.ReadError("lost"), httpx.Response(200, json=replayed)])
    async with _client(script, sleeps, window_s=60) as client:
        retried = await client.classify_answer(
            np.zeros((1, 2, 4, 4, 3), np.uint8), idempotency_key="K"
        )
    assert first.charged_earlier and not retried.charged_earlier


def test_retry_after_parsing() -> None:
    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    parsed = parse_retry_after(future)
    assert parsed is not None and 25 < parsed <= 30
