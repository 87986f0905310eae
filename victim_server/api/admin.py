"""Admin routes: create, list, inspect, top up and revoke API keys."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import APIRouter, Header, Response, status

from shared.problems import ProblemType
from shared.schemas import (
    DefensePolicy,
    DetectionPolicy,
    DetectionStatus,
    KeyCreate,
    KeyCreated,
    KeyPublic,
    TopUp,
)
from victim_server.accounting.keys import ApiKey, TopUpStatus
from victim_server.api.deps import AdminDep, ServicesDep
from victim_server.api.openapi import problem_responses
from victim_server.api.problems import problem

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[AdminDep],
    responses=problem_responses(400, 401, 422, 503),
)
_KEY = problem_responses(404)
_TOP_UP_RESPONSES = {
    **_KEY,
    200: {
        "description": "The key after the top-up (or, for a retried Idempotency-Key, after the "
        "first call, which alone added; the answer then carries Idempotent-Replayed: true)",
        "headers": {
            "Idempotent-Replayed": {
                "description": "'true' when this Idempotency-Key was already used with the "
                "same amount: nothing was added this time",
                "schema": {"type": "string", "enum": ["true"]},
            }
        },
    },
}
_TOP_UP_KEY_DOC = (
    "Makes a retried top-up add once: the first call with a key adds, a later call with the "
    "same key and the same amount adds nothing (Idempotent-Replayed: true), the same key with "
    "another amount is refused (422). Keys are per API key and kept for the idempotency TTL."
)
TopUpKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=200, description=_TOP_UP_KEY_DOC),
]


def _found(key: ApiKey | None, key_id: str) -> ApiKey:
    """The key, or 404 -- also for a revoked (deleted) key: it stays in GET /admin/keys for
    audit, but its sub-resources are gone."""
    if key is None:
        raise problem(ProblemType.NOT_FOUND, f"no key {key_id!r}")
    if key.revoked:
        raise problem(
            ProblemType.NOT_FOUND,
            f"key {key_id!r} was revoked; it is still listed in GET /admin/keys for audit",
        )
    return key


@router.post("/keys", status_code=status.HTTP_201_CREATED)
async def create_key(body: KeyCreate, services: ServicesDep) -> KeyCreated:
    """Create a key. The response holds the secret ``api_key``; it is never shown again."""
    if body.top_k > services.model_config.num_classes:
        raise problem(
            ProblemType.VALIDATION_ERROR,
            f"top_k {body.top_k} exceeds the model's {services.model_config.num_classes} classes",
        )
    _check_defenses(body.defenses, services)
    if body.detection is None:
        body = body.model_copy(update={"detection": services.default_detection()})
    else:
        services.detection.check(body.detection)
    created = await services.keys.create(body)
    assert created is not None  # a fresh id is always created
    services.metrics.budget_remaining.labels(created.key_id).set(created.remaining)
    return created


@router.get("/keys")
async def list_keys(services: ServicesDep) -> list[KeyPublic]:
    return [key.public() for key in await services.keys.list()]


@router.get("/keys/{key_id}", responses=_KEY)
async def get_key(key_id: str, services: ServicesDep) -> KeyPublic:
    return _found(await services.keys.get(key_id), key_id).public()


@router.post("/keys/{key_id}/topup", responses=_TOP_UP_RESPONSES)
async def top_up(
    key_id: str,
    body: TopUp,
    services: ServicesDep,
    response: Response,
    idempotency_key: TopUpKey = None,
) -> KeyPublic:
    """Add ``amount`` queries to the key's budget (atomic). With an ``Idempotency-Key``, a
    retried call adds once."""
    _found(await services.keys.get(key_id), key_id)
    operation_id = None
    if idempotency_key is not None:
        operation_id = "idem:" + hashlib.sha256(idempotency_key.encode()).hexdigest()
    outcome, stored = await services.keys.top_up_once(
        key_id, body.amount, operation_id=operation_id
    )
    if outcome is TopUpStatus.MISMATCH:
        raise problem(
            ProblemType.VALIDATION_ERROR,
            "this Idempotency-Key was used with a different amount; nothing was added",
        )
    key = _found(stored, key_id)
    if outcome is TopUpStatus.REPLAYED:
        response.headers["Idempotent-Replayed"] = "true"
    services.metrics.budget_remaining.labels(key.key_id).set(key.remaining)
    return key.public()


@router.get("/keys/{key_id}/detection", responses=_KEY)
async def get_detection(key_id: str, services: ServicesDep) -> DetectionStatus:
    """The key's detection policy and its detector's state: statistic, alarm and when it fired."""
    key = _found(await services.keys.get(key_id), key_id)
    return await services.detection.status(key.key_id, key.detection)


@router.put("/keys/{key_id}/detection", responses=_KEY)
async def set_detection(
    key_id: str, body: DetectionPolicy, services: ServicesDep, reset: bool = False
) -> DetectionStatus:
    """Change the key's detection policy; ``?reset=true`` also clears its detectors' state."""
    _found(await services.keys.get(key_id), key_id)
    services.detection.check(body)
    key = _found(await services.keys.set_policies(key_id, detection=body), key_id)
    if reset:
        await services.detection.reset(key.key_id)
    return await services.detection.status(key.key_id, key.detection)


@router.put("/keys/{key_id}/defenses", responses=_KEY)
async def set_defenses(key_id: str, body: DefensePolicy, services: ServicesDep) -> KeyPublic:
    """Change the key's output defenses (applied to every later answer)."""
    _check_defenses(body, services)
    _found(await services.keys.get(key_id), key_id)
    return _found(await services.keys.set_policies(key_id, defenses=body), key_id).public()


def _check_defenses(defenses: DefensePolicy, services: ServicesDep) -> None:
    classes = services.model_config.num_classes
    if defenses.top_k is not None and defenses.top_k > classes:
        raise problem(
            ProblemType.VALIDATION_ERROR,
            f"defenses.top_k {defenses.top_k} exceeds the model's {classes} classes",
        )


@router.delete("/keys/{key_id}", responses=_KEY)
async def revoke(key_id: str, services: ServicesDep) -> KeyPublic:
    """Revoke the key: later requests with it get 403, its admin sub-resources 404. The record
    stays in GET /admin/keys for audit."""
    _found(await services.keys.get(key_id), key_id)
    revoked = await services.keys.revoke(key_id)
    if revoked is None:
        raise problem(ProblemType.NOT_FOUND, f"no key {key_id!r}")
    return revoked.public()
