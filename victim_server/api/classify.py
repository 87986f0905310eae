"""POST /v1/classify: decode, charge, batch, answer. Bad input is never charged."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

import anyio
import numpy as np
import xxhash
from fastapi import APIRouter, Request
from fastapi.responses import Response
from redis.exceptions import RedisError

from shared.codec import ClipDecodeError, ClipLimits
from shared.problems import ProblemType, VidStealProblem, problem_from_clip_error
from shared.schemas import BudgetState, ClassifyResponse, OutputMode
from victim_server.accounting.keys import ApiKey
from victim_server.accounting.ledger import Reservation, ReserveStatus
from victim_server.accounting.reconcile import Settlement
from victim_server.api.clip_body import BodyLimits, decode_body, read_body
from victim_server.api.deps import BEARER_SECURITY, api_key_secret, services_of, usable_key
from victim_server.api.direct import DirectRoute, header_param_doc, optional_header
from victim_server.api.openapi import problem_responses
from victim_server.api.problems import problem
from victim_server.detection.base import Observation
from victim_server.inference.batcher import Arrival, Overloaded
from victim_server.policy.answers import compose_answers
from victim_server.services import Services

log = logging.getLogger("vidsteal.victim")

# The hot route: a DirectRoute, so FastAPI documents it but solves no dependencies per request.
router = APIRouter(prefix="/v1", tags=["classify"], route_class=DirectRoute)

_BODY_DOC = {
    "requestBody": {
        "required": True,
        "description": "A batch of uint8 clips (N, T, H, W, 3); any T/H/W is resampled.",
        "content": {
            "application/x-npy": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": "raw C-order bytes; needs an X-Clip-Shape header ('N,T,H,W,3')",
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "shape": {"type": "array", "items": {"type": "integer"}},
                        "dtype": {"type": "string", "enum": ["uint8"]},
                        "data": {"type": "string", "description": "base64 of C-order bytes"},
                        "clips": {"type": "array", "description": "nested lists of 0..255"},
                    },
                }
            },
            "video/mp4": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "array",
                            "minItems": 1,
                            "items": {"type": "string", "format": "binary"},
                        }
                    },
                }
            },
        },
    }
}

_STALE_RETRIES = 3  # reservations refused because the key record changed meanwhile

_IDEMPOTENCY_HEADER = "Idempotency-Key"
_IDEMPOTENCY_MAX_LENGTH = 200

_OPENAPI_EXTRA = {
    **_BODY_DOC,
    "parameters": [header_param_doc(_IDEMPOTENCY_HEADER, max_length=_IDEMPOTENCY_MAX_LENGTH)],
    "security": [BEARER_SECURITY],
}


@router.post(
    "/classify",
    response_model=ClassifyResponse,
    response_model_exclude_none=True,
    openapi_extra=_OPENAPI_EXTRA,
    responses=problem_responses(400, 401, 403, 409, 413, 415, 422, 429, 500, 503),
)
async def classify(request: Request) -> Response:
    """Classify a batch of clips; one clip is one query against this key's budget."""
    services = services_of(request)
    # Announced at once, so a batch being formed waits for this request (closed when it is
    # queued or refused).
    with services.batcher.arriving() as arrival:
        api_key = await api_key_secret(request, services)
        key = usable_key(request, services, await services.key_cache.authenticate(api_key))
        idempotency_key = optional_header(
            request, _IDEMPOTENCY_HEADER, max_length=_IDEMPOTENCY_MAX_LENGTH
        )
        return await _classify(request, services, arrival, key, api_key, idempotency_key)


async def _classify(
    request: Request,
    services: Services,
    arrival: Arrival,
    key: ApiKey,
    api_key: str,
    idempotency_key: str | None,
) -> Response:
    metrics = services.metrics
    request_id = uuid.uuid4().hex
    if key.remaining <= 0:  # the copy may predate a top-up: ask Redis before refusing
        key = usable_key(request, services, await services.key_cache.refresh(api_key))
    poison = await services.detection.gate(key.key_id, key.detection)
    await _refuse_when_spent(key, services, idempotency_key)  # before reading the body
    clips = await _decode(request, key, services)
    n = int(clips.shape[0])
    fingerprint = await _fingerprint_of(clips) if idempotency_key else ""
    for _ in range(_STALE_RETRIES):
        try:
            reservation = await services.ledger.reserve(
                key.key_id,
                n,
                idempotency_key=idempotency_key,
                fingerprint=fingerprint,
                request_id=request_id,
                revision=key.revision,
            )
        except RedisError as exc:
            raise await _unsettled(exc, key, n, services, request_id, idempotency_key) from None
        if reservation.status is not ReserveStatus.STALE:
            break
        # The key's policies or revocation changed since this process's copy: nothing was
        # charged. Read the record again and decide with what it says now.
        key = usable_key(request, services, await services.key_cache.refresh(api_key))
        poison = await services.detection.gate(key.key_id, key.detection)
    else:
        raise _accounting_problem(Settlement.NOT_CHARGED)
    services.key_cache.spent(key.key_id, budget=reservation.budget, spent=reservation.spent)
    metrics.budget_remaining.labels(key.key_id).set(reservation.remaining)
    if reservation.status not in (ReserveStatus.OK, ReserveStatus.TAKEOVER):
        return _not_reserved(reservation, key, n, services)
    try:
        answer, unobserved = await _answer(
            clips, key, services, reservation, request_id, poison, arrival
        )
        body = answer.model_dump_json(exclude_none=True)
        await _record(services, key, unobserved, request_id, idempotency_key, fingerprint, body)
    except BaseException as exc:
        settlement = await asyncio.shield(
            services.reconciler.settle(
                key.key_id, request_id=request_id, idempotency_key=idempotency_key
            )
        )
        if settlement is not Settlement.PENDING:
            budget = await _budget_quietly(key, services)
            if budget is not None:
                metrics.budget_remaining.labels(key.key_id).set(budget.remaining)
        raise _failure_problem(exc, key, n, services, settlement) from exc
    metrics.queries.labels(key.key_id, "accepted").inc(n)
    return Response(content=body, media_type="application/json")


async def _answer(
    clips: np.ndarray,
    key: ApiKey,
    services: Services,
    reservation: Reservation,
    request_id: str,
    poison: bool,
    arrival: Arrival,
) -> tuple[ClassifyResponse, Observation | None]:
    """Everything between charging and answering; any failure here is given back. Also returns
    the observation still to be fed to the key's detector (None when it was fed already)."""
    output = await services.batcher.submit(
        clips, arrival=arrival, embed=key.detection.detector == "seat"
    )
    config = services.model_config
    logits = output.logits
    observation = Observation(
        clips,
        logits,
        output.features,
        delta=key.detection.delta,
        embeddings=output.embeddings,
    )
    unobserved: Observation | None = observation
    if key.detection.action == "poison":  # this batch's verdict decides this answer
        verdict = await services.detection.observe(key.key_id, key.detection, observation)
        unobserved = None
        if verdict is not None and verdict.alarm:
            poison = True
    if poison:
        services.metrics.poisoned.inc(len(clips))
    answer = ClassifyResponse(
        model=config.model_tag,
        output=key.output,
        top_k=key.top_k if key.output is OutputMode.TOPK else None,
        results=compose_answers(
            logits,
            mode=key.output,
            labels=config.labels,
            top_k=key.top_k,
            defenses=key.defenses,
            poison=poison,
            rng=services.rng,
            features=output.features,
        ),
        budget=_budget_after(key, reservation),
        request_id=request_id,
    )
    return answer, unobserved


async def _record(
    services: Services,
    key: ApiKey,
    unobserved: Observation | None,
    request_id: str,
    idempotency_key: str | None,
    fingerprint: str,
    body: str,
) -> None:
    """The detector's update and the answer's commit for Idempotency-Key replay, made in one
    loop turn so that they go to Redis in one round trip (ScriptPipeline).

    The answer is charged and computed, so a Redis failure of either write is logged and the
    answer delivered: a retry with this Idempotency-Key inherits the charge once the pending
    record counts as abandoned, and detection fails open (as when its lock is busy)."""
    observe = (
        services.detection.observe(key.key_id, key.detection, unobserved)
        if unobserved is not None
        else _nothing()
    )
    commit = (
        services.ledger.commit(
            key.key_id,
            idempotency_key=idempotency_key,
            fingerprint=fingerprint,
            response_json=body,
            request_id=request_id,
        )
        if idempotency_key
        else _nothing()
    )
    observed, committed = await asyncio.gather(observe, commit, return_exceptions=True)
    for outcome, what in ((committed, "commit"), (observed, "detector update")):
        if isinstance(outcome, RedisError):
            log.warning("%s of request %s failed (%s): answered anyway", what, request_id, outcome)
        elif isinstance(outcome, BaseException):
            raise outcome


async def _nothing() -> None:
    return None


async def _refuse_when_spent(key: ApiKey, services: Services, idempotency_key: str | None) -> None:
    """429 before the body is read when the key has nothing left, so a spent key cannot make
    the server decode bodies at will. A retry of a finished request still gets its replay."""
    if key.remaining > 0:
        return
    if idempotency_key and await services.ledger.has_record(key.key_id, idempotency_key):
        return
    services.metrics.queries.labels(key.key_id, "budget_exhausted").inc()
    raise problem(
        ProblemType.BUDGET_EXHAUSTED,
        f"no queries left of {key.budget}",
        budget=key.budget_state().model_dump(),
    )


async def _unsettled(
    exc: RedisError,
    key: ApiKey,
    n: int,
    services: Services,
    request_id: str,
    idempotency_key: str | None,
) -> VidStealProblem:
    """The reserve failed in Redis: it may have charged. Settle it, then say what holds."""
    log.warning("reserve of request %s failed: %s", request_id, exc)
    settlement = await asyncio.shield(
        services.reconciler.settle(
            key.key_id, request_id=request_id, idempotency_key=idempotency_key
        )
    )
    services.metrics.queries.labels(key.key_id, "accounting_unavailable").inc(n)
    return _accounting_problem(settlement)


def _accounting_problem(settlement: Settlement) -> VidStealProblem:
    if settlement is Settlement.PENDING:
        detail = (
            "the accounting store did not answer, so whether this request was charged is not "
            "known yet; any charge it made is given back once the store answers again (a retry "
            "with the same Idempotency-Key is never charged twice)"
        )
    else:
        detail = "the accounting store did not answer in time; this request was not charged"
        if settlement is Settlement.REFUNDED:
            detail += " (its charge was given back)"
    return problem(
        ProblemType.ACCOUNTING_UNAVAILABLE,
        detail,
        headers={"Retry-After": "1"},
        retry_after=1.0,
        charge=settlement.value,
    )


def _failure_problem(
    exc: BaseException, key: ApiKey, n: int, services: Services, settlement: Settlement
) -> BaseException:
    """The problem for a failure after the charge (already settled); cancellation propagates."""
    metrics = services.metrics
    charged = (
        "nothing was charged"
        if settlement is not Settlement.PENDING
        else "any charge is given back once the accounting store answers"
    )
    if isinstance(exc, Overloaded):
        metrics.queries.labels(key.key_id, "overloaded").inc(n)
        return problem(
            ProblemType.OVERLOADED,
            f"the inference queue is full; {charged}",
            headers={"Retry-After": str(int(np.ceil(exc.retry_after_s)))},
            retry_after=exc.retry_after_s,
            charge=settlement.value,
        )
    if isinstance(exc, RedisError):
        metrics.queries.labels(key.key_id, "accounting_unavailable").inc(n)
        return _accounting_problem(settlement)
    if isinstance(exc, Exception):
        metrics.queries.labels(key.key_id, "error").inc(n)
        return problem(
            ProblemType.INFERENCE_FAILED,
            f"inference failed ({type(exc).__name__}); {charged}",
            charge=settlement.value,
        )
    return exc  # cancellation: settled above, propagate


async def _budget_quietly(key: ApiKey, services: Services) -> BudgetState | None:
    try:
        fresh = await services.keys.get(key.key_id)
    except RedisError:
        return None
    return fresh.budget_state() if fresh is not None else None


async def _decode(request: Request, key: ApiKey, services: Services) -> np.ndarray:
    settings = services.settings
    limits = BodyLimits(
        max_body_bytes=settings.max_body_bytes,
        clips=ClipLimits(
            max_clips=settings.max_clips_per_request,
            max_decoded_bytes=settings.max_decoded_bytes,
        ),
        model_frames=services.model_config.input.frames,
        max_video_frames=settings.max_video_frames,
        max_video_pixels=settings.max_video_pixels,
        max_json_parse_bytes=settings.max_json_parse_bytes,
    )
    try:
        body = await read_body(request, settings.max_body_bytes)
        services.metrics.received_bytes.inc(len(body))
        return await decode_body(body, request.headers, limits)
    except ClipDecodeError as exc:
        services.metrics.queries.labels(key.key_id, "invalid").inc()
        raise VidStealProblem(problem_from_clip_error(exc)) from None


# xxh3 hashes ~40 GB/s here: 16 MiB hold the loop ~0.4 ms, about what a worker-thread hop costs.
_HASH_ON_LOOP_BYTES = 16 << 20


async def _fingerprint_of(clips: np.ndarray) -> str:
    """Batches up to 16 MiB are hashed at once; a larger one in a worker thread (xxhash lets
    go of the GIL, so the loop runs meanwhile)."""
    if clips.nbytes <= _HASH_ON_LOOP_BYTES:
        return _fingerprint(clips)
    return await anyio.to_thread.run_sync(_fingerprint, clips)


def _fingerprint(clips: np.ndarray) -> str:
    """Identifies the request's content for Idempotency-Key reuse checks: XXH3-128 of the
    shape and the clips' bytes.

    Not a cryptographic hash, and it needs not be one: the fingerprint only tells a retry from
    another request under the same key's Idempotency-Key, so a crafted collision could only get
    a client the replay of an answer it already paid for; accidental ones, at 128 bits, do not
    happen. SHA-256 took 0.9 ms for a 32-clip body (1.5 MB) here, a quarter of the request's CPU
    outside the model; XXH3 takes 0.04 ms."""
    digest = xxhash.xxh3_128()
    digest.update(repr(clips.shape).encode())
    digest.update(np.ascontiguousarray(clips).data)
    return digest.hexdigest()


def _budget_after(key: ApiKey, reservation: Reservation) -> BudgetState:
    return BudgetState(
        key_id=key.key_id,
        budget=reservation.budget,
        spent=reservation.spent,
        remaining=reservation.remaining,
    )


def _not_reserved(reservation: Reservation, key: ApiKey, n: int, services: Services) -> Response:
    metrics = services.metrics
    status = reservation.status
    budget = _budget_after(key, reservation)
    if status is ReserveStatus.REPLAY and reservation.stored_response is not None:
        metrics.queries.labels(key.key_id, "replayed").inc(n)
        stored = json.loads(reservation.stored_response)
        stored["replayed"] = True
        return Response(
            content=json.dumps(stored),
            media_type="application/json",
            headers={"Idempotent-Replayed": "true"},
        )
    if status is ReserveStatus.EXHAUSTED:
        metrics.queries.labels(key.key_id, "budget_exhausted").inc(n)
        raise problem(
            ProblemType.BUDGET_EXHAUSTED,
            f"{n} clip(s) asked for, {reservation.remaining} left of {reservation.budget}",
            budget=budget.model_dump(),
        )
    if status is ReserveStatus.REVOKED:
        metrics.queries.labels(key.key_id, "revoked").inc(n)
        raise problem(ProblemType.KEY_REVOKED, f"key {key.key_id} has been revoked")
    if status is ReserveStatus.VOID:
        raise _accounting_problem(Settlement.NOT_CHARGED)
    if status is ReserveStatus.UNKNOWN:
        raise problem(ProblemType.UNAUTHORIZED, "unknown API key")
    if status is ReserveStatus.IN_PROGRESS:
        raise problem(
            ProblemType.CONFLICT,
            "a request with this Idempotency-Key is in progress",
            headers={"Retry-After": "1"},
        )
    raise problem(
        ProblemType.VALIDATION_ERROR, "this Idempotency-Key was used with a different request body"
    )
