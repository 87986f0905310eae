"""VictimClient: the attacker's only way to the victim, over HTTP (httpx, async only).

Every classify call carries an ``Idempotency-Key``, so a retry after a timeout or a crash is
answered from the victim's record instead of being charged twice. 429 throttling, 503 overload,
409 in-progress answers and connection errors are retried with exponential backoff and jitter,
honouring ``Retry-After``, for at least a time window (:class:`RetryPolicy`): a victim restart
is waited out.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import numpy as np

from attacker.client.errors import Blocked, BudgetExhausted, RetriesExhausted, VictimError
from shared.codec import NPY_CONTENT_TYPE, compress, encode_npy
from shared.problems import Problem, ProblemType, parse_problem
from shared.schemas import BudgetState, ClassifyResponse, ModelInfo

RETRYABLE_STATUS = {409, 429, 502, 503, 504}


@dataclass(frozen=True)
class RetryPolicy:
    """Transient failures (connection errors, timeouts, 409 in progress, 429 throttled, 5xx)
    are retried at least ``max_attempts`` times *and* for at least ``retry_window_s`` seconds
    from the first attempt, so a victim restart (seconds of refused connections, then 409s until
    its abandoned requests are taken over) is waited out whatever the attempt count."""

    max_attempts: int = 8
    base_delay_s: float = 0.25
    max_delay_s: float = 30.0
    jitter: float = 0.5  # fraction of the delay drawn at random
    retry_window_s: float = 300.0

    def delay(self, attempt: int, retry_after_s: float | None, rng: random.Random) -> float:
        backoff = min(self.max_delay_s, self.base_delay_s * 2**attempt)
        backoff *= 1 - self.jitter + self.jitter * rng.random()
        if retry_after_s is not None:
            return min(self.max_delay_s, max(retry_after_s, backoff))
        return backoff

    def gives_up(self, attempts: int, elapsed_s: float) -> bool:
        return attempts >= self.max_attempts and elapsed_s >= self.retry_window_s


@dataclass(frozen=True)
class Answered:
    """A classify answer and how many attempts it took: a replay on the first attempt was
    charged before this call (an earlier run); after retries, by one of this call's attempts."""

    response: ClassifyResponse
    attempts: int

    @property
    def charged_earlier(self) -> bool:
        return self.response.replayed and self.attempts == 1


RetryObserver = Callable[[str], None]  # called with the reason of each retry


class VictimClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 120.0,
        retry: RetryPolicy | None = None,
        compression: Literal["zstd", "gzip"] | None = None,
        on_retry: RetryObserver | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        seed: int = 0,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            transport=transport,
            timeout=timeout_s,
            headers={"Authorization": f"Bearer {api_key}"},
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        )
        self.base_url = base_url.rstrip("/")
        self._retry = retry or RetryPolicy()
        self._compression = compression
        self._on_retry = on_retry
        self._sleep = sleep
        self._rng = random.Random(seed)

    async def __aenter__(self) -> VictimClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def model_info(self) -> ModelInfo:
        response = await self._send("GET", "/v1/model")
        return ModelInfo.model_validate_json(response.content)

    async def budget(self) -> BudgetState:
        response = await self._send("GET", "/v1/budget")
        return BudgetState.model_validate_json(response.content)

    async def classify(self, clips: np.ndarray, *, idempotency_key: str) -> ClassifyResponse:
        return (await self.classify_answer(clips, idempotency_key=idempotency_key)).response

    async def classify_answer(self, clips: np.ndarray, *, idempotency_key: str) -> Answered:
        """:meth:`classify`, also saying how many attempts the answer took."""
        body = encode_npy(clips)
        headers = {"Content-Type": NPY_CONTENT_TYPE, "Idempotency-Key": idempotency_key}
        if self._compression is not None:
            body = compress(body, self._compression)
            headers["Content-Encoding"] = self._compression
        response, attempts = await self._send_counted(
            "POST", "/v1/classify", content=body, headers=headers
        )
        return Answered(ClassifyResponse.model_validate_json(response.content), attempts)

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return (await self._send_counted(method, path, **kwargs))[0]

    async def _send_counted(
        self, method: str, path: str, **kwargs: Any
    ) -> tuple[httpx.Response, int]:
        last_reason = ""
        last: tuple[int | None, ProblemType | None] = (None, None)
        started = time.monotonic()
        waited = 0.0  # time slept in backoff (counts even with an injected sleep)
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                response = await self._http.request(method, path, **kwargs)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last_reason = f"{type(exc).__name__}: {exc}"
                last = (None, None)
            else:
                if response.status_code < 400:
                    return response, attempt
                problem = self._raise_final(response)
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                last_reason = f"HTTP {response.status_code}"
                last = (response.status_code, problem.kind if problem is not None else None)
            if self._on_retry is not None:
                self._on_retry(last_reason)
            elapsed = max(time.monotonic() - started, waited)
            if self._retry.gives_up(attempt, elapsed):
                break
            delay = self._retry.delay(attempt - 1, retry_after, self._rng)
            waited += delay
            await self._sleep(delay)
        raise RetriesExhausted(
            f"{method} {path} failed {attempt} times in {elapsed:.0f} s; last: {last_reason}",
            status=last[0],
            kind=last[1],
        )

    @staticmethod
    def _raise_final(response: httpx.Response) -> Problem | None:
        """Raise for answers that a retry cannot change; return the problem of retryable ones."""
        problem = parse_problem(response.status_code, response.content)
        kind = problem.kind if problem is not None else None
        if kind is ProblemType.BUDGET_EXHAUSTED:
            raise BudgetExhausted(response.status_code, problem, response.text)
        if response.status_code == 403:
            raise Blocked(response.status_code, problem, response.text)
        if response.status_code in RETRYABLE_STATUS:
            return problem
        raise VictimError(response.status_code, problem, response.text)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
