"""Admin routes: create, list, inspect, top up and revoke API keys."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, status

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
from victim_server.accounting.keys import ApiKey
from victim_server.api.deps import AdminDep, ServicesDep
from victim_server.api.openapi import problem_responses
from victim_server.api.problems import problem

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[AdminDep],
    responses=problem_responses(401, 422, 503),
)
_KEY = problem_responses(404)


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


@router.post("/keys/{key_id}/topup", responses=_KEY)
async def top_up(key_id: str, body: TopUp, services: ServicesDep) -> KeyPublic:
    """Add ``amount`` queries to the key's budget (atomic)."""
    _found(await services.keys.get(key_id), key_id)
    key = _found(
        await services.keys.top_up(key_id, body.amount, operation_id=uuid.uuid4().hex), key_id
    )
    services.metrics.budget_remaining.labels(key.key_id).set(key.remaining)
    return key.public()


@router.get("/keys/{key_id}/detection", responses=_KEY)
async def get_detection(key_id: str, services: ServicesDep) -> DetectionStatus:
    """The key's detection policy and PRADA state: W, distances, alarm and when it fired."""
    key = _found(await services.keys.get(key_id), key_id)
    return await services.detection.status(key.key_id, key.detection)


@router.put("/keys/{key_id}/detection", responses=_KEY)
async def set_detection(
    key_id: str, body: DetectionPolicy, services: ServicesDep, reset: bool = False
) -> DetectionStatus:
    """Change the key's detection policy; ``?reset=true`` also clears its PRADA state."""
    _found(await services.keys.get(key_id), key_id)
    key = _found(await services.keys.set_policies(key_id, detection=body), key_id)
    if reset:
        await services.detection.store.reset(key.key_id)
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
