"""Model zoo: a registry, one factory, typed configs, local weights only."""

from victim_server.models.config import InputSpec, ModelConfig
from victim_server.models.factory import create_model, model_config, split_model_name_tag
from victim_server.models.registry import (
    ModelEntry,
    VideoClassifier,
    get_model_entry,
    list_models,
    register_model,
)
from victim_server.models.weights import WeightsError, load_state_dict, read_config, save_weights

__all__ = [
    "InputSpec",
    "ModelConfig",
    "ModelEntry",
    "VideoClassifier",
    "WeightsError",
    "create_model",
    "get_model_entry",
    "list_models",
    "load_state_dict",
    "model_config",
    "read_config",
    "register_model",
    "save_weights",
    "split_model_name_tag",
]
