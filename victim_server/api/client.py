"""What a key can see about itself and the model: GET /v1/budget and GET /v1/model."""

from __future__ import annotations

from fastapi import APIRouter

from shared.schemas import BudgetState, InputSpecWire, ModelInfo, OutputMode
from victim_server.api.clip_body import ACCEPTED_CONTENT_TYPES
from victim_server.api.deps import ApiKeyDep, ServicesDep
from victim_server.api.openapi import problem_responses
from victim_server.policy.fingerprint import fingerprint_secret, policy_fingerprint

router = APIRouter(prefix="/v1", tags=["client"], responses=problem_responses(401, 403, 503))


@router.get("/budget")
async def get_budget(key: ApiKeyDep) -> BudgetState:
    """This key's budget, spent and remaining queries (one clip = one query)."""
    return key.budget_state()


@router.get("/model")
async def get_model(key: ApiKeyDep, services: ServicesDep) -> ModelInfo:
    """The served model's tag, input spec and labels; this key's id, output mode and answer-policy
    fingerprint (it changes whenever the key's answers could: cache answers under it)."""
    config = services.model_config
    spec = config.input
    return ModelInfo(
        model=config.model_tag,
        architecture=config.architecture,
        num_classes=config.num_classes,
        labels=list(config.labels),
        input=InputSpecWire(
            frames=spec.frames,
            height=spec.height,
            width=spec.width,
            mean=spec.mean,
            std=spec.std,
        ),
        output=key.output,
        top_k=key.top_k if key.output is OutputMode.TOPK else None,
        max_clips_per_request=services.settings.max_clips_per_request,
        max_body_bytes=services.settings.max_body_bytes,
        content_types=ACCEPTED_CONTENT_TYPES,
        key_id=key.key_id,
        policy_fingerprint=policy_fingerprint(
            output=key.output,
            top_k=key.top_k,
            defenses=key.defenses,
            detection=key.detection,
            secret=fingerprint_secret(services.settings.admin_token.get_secret_value()),
        ),
    )
