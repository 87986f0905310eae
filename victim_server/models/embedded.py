"""Where the committed embedded victim lives, and the names that point at it."""

from __future__ import annotations

from pathlib import Path

EMBEDDED_ALIAS = "embedded"
EMBEDDED_MODEL = "swin3d_micro.synthactions"
EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"


def packaged_weights_path(model_tag: str) -> Path:
    """Weights committed in the repository for ``architecture.tag`` (which may not exist yet)."""
    return EMBEDDED_DIR / f"{model_tag}.safetensors"


def training_record_path(model_tag: str) -> Path:
    """JSON beside the weights: seed, data config, schedule, measured accuracy and time."""
    return EMBEDDED_DIR / f"{model_tag}.training.json"


def resolve_alias(name: str) -> str:
    return EMBEDDED_MODEL if name == EMBEDDED_ALIAS else name
