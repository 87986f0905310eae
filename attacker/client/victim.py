"""VictimClient: the attacker's only way to the victim, over HTTP (httpx, async only).

Every classify call carries an ``Idempotency-Key``, so a retry after a timeout or a crash is
answered from the victim's record instead of being charged twice. 429 throttling, 503 overload
and 409 in-progress answers are retried with exponential backoff and jitter, honouring
``Retry-After``.
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
from shared.problems import ProblemType, parse_problem
from shared.schemas import BudgetState, ClassifyResponse, ModelInfo

RETRYABLE_STATUS = {409, 429, 502, 503, 504}


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_delay_s: float = 0.25
    max_delay_s: float = 30.0
    jitter: float = 0.5  # fraction of the delay drawn at random

    def delay(self, attempt: int, retry_after_s: float | None, rng: random.Random) -> float:
        backoff = min(self.max_delay_s, self.base_delay_s * 2**attempt)
        backoff *= 1 - self.jitter + self.jitter * rng.random()
        if retry_after_s is not None:
            return min(self.max_delay_s, max(retry_after_s, backoff))
        return backoff


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
        body = encode_npy(clips)
        headers = {"Content-Type": NPY_CONTENT_TYPE, "Idempotency-Key": idempotency_key}
        if self._compression is not None:
            body = compress(body, self._compression)
            headers["Content-Encoding"] = self._compression
        response = await self._send("POST", "/v1/classify", content=body, headers=headers)
        return ClassifyResponse.model_validate_json(response.content)

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        last_reason = ""
        for attempt in range(self._retry.max_attempts):
            retry_after: float | None = None
            try:
                response = await self._http.request(method, path, **kwargs)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last_reason = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 400:
                    return response
                self._raise_final(response)
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                last_reason = f"HTTP {response.status_code}"
            if self._on_retry is not None:
                self._on_retry(last_reason)
            await self._sleep(self._retry.delay(attempt, retry_after, self._rng))
        raise RetriesExhausted(
            f"{method} {path} failed {self._retry.max_attempts} times; last: {last_reason}"
        )

    @staticmethod
    def _raise_final(response: httpx.Response) -> None:
        """Raise for answers that a retry cannot change; return for retryable ones."""
        problem = parse_problem(response.status_code, response.content)
        kind = problem.kind if problem is not None else None
        if kind is ProblemType.BUDGET_EXHAUSTED:
            raise BudgetExhausted(response.status_code, problem, response.text)
        if response.status_code == 403:
            raise Blocked(response.status_code, problem, response.text)
        if response.status_code in RETRYABLE_STATUS:
            return
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
