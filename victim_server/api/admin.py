"""Admin routes: create, list, inspect, top up and revoke API keys."""

from __future__ import annotations

from fastapi import APIRouter, status

from shared.problems import ProblemType
from shared.schemas import KeyCreate, KeyCreated, KeyPublic, TopUp
from victim_server.accounting.keys import ApiKey
from victim_server.api.deps import AdminDep, ServicesDep
from victim_server.api.problems import problem

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[AdminDep])


def _found(key: ApiKey | None, key_id: str) -> ApiKey:
    if key is None:
        raise problem(ProblemType.NOT_FOUND, f"no key {key_id!r}")
    return key


@router.post("/keys", status_code=status.HTTP_201_CREATED)
async def create_key(body: KeyCreate, services: ServicesDep) -> KeyCreated:
    """Create a key. The response holds the secret ``api_key``; it is never shown again."""
    if body.top_k > services.model_config.num_classes:
        raise problem(
            ProblemType.VALIDATION_ERROR,
            f"top_k {body.top_k} exceeds the model's {services.model_config.num_classes} classes",
        )
    created = await services.keys.create(body)
    services.metrics.budget_remaining.labels(created.key_id).set(created.remaining)
    return created


@router.get("/keys")
async def list_keys(services: ServicesDep) -> list[KeyPublic]:
    return [key.public() for key in await services.keys.list()]


@router.get("/keys/{key_id}")
async def get_key(key_id: str, services: ServicesDep) -> KeyPublic:
    return _found(await services.keys.get(key_id), key_id).public()


@router.post("/keys/{key_id}/topup")
async def top_up(key_id: str, body: TopUp, services: ServicesDep) -> KeyPublic:
    """Add ``amount`` queries to the key's budget (atomic)."""
    key = _found(await services.keys.top_up(key_id, body.amount), key_id)
    services.metrics.budget_remaining.labels(key.key_id).set(key.remaining)
    return key.public()


@router.delete("/keys/{key_id}")
async def revoke(key_id: str, services: ServicesDep) -> KeyPublic:
    """Revoke the key: later requests with it get 403. The record stays for audit."""
    return _found(await services.keys.revoke(key_id), key_id).public()
