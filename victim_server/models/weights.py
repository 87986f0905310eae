"""Local weight files: safetensors, or ``torch.load(weights_only=True)``. Never a download."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from victim_server.models.config import ModelConfig

CONFIG_METADATA_KEY = "vidsteal_config"
SAFETENSORS_SUFFIXES = {".safetensors"}
TORCH_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt"}
# Wrapper keys used by common training scripts around the real state dict.
_NESTED_STATE_KEYS = ("state_dict", "model", "model_state", "model_state_dict")


class WeightsError(ValueError):
    """A weights file is missing, unreadable, or does not fit the model's config."""


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a local file without unpickling arbitrary objects."""
    file = Path(path)
    if not file.is_file():
        raise WeightsError(f"weights file not found: {file}")
    suffix = file.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    if suffix in TORCH_SUFFIXES:
        try:
            loaded = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ...
            raise WeightsError(f"cannot read {file} as a weights-only checkpoint: {exc}") from exc
        return _unwrap_state_dict(loaded, file)
    raise WeightsError(
        f"unsupported weights format {suffix!r} for {file}; "
        f"use .safetensors or one of {sorted(TORCH_SUFFIXES)}"
    )


def _unwrap_state_dict(loaded: object, file: Path) -> dict[str, torch.Tensor]:
    if isinstance(loaded, Mapping):
        for key in _NESTED_STATE_KEYS:
            inner = loaded.get(key)
            if isinstance(inner, Mapping):
                loaded = inner
                break
        tensors = {str(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    raise WeightsError(f"{file} holds no tensor state dict")


def read_config(path: str | Path) -> ModelConfig | None:
    """The ModelConfig stored in a safetensors header by :func:`save_weights`, if any."""
    file = Path(path)
    if file.suffix.lower() not in SAFETENSORS_SUFFIXES or not file.is_file():
        return None
    with safe_open(str(file), framework="pt", device="cpu") as handle:
        metadata = handle.metadata() or {}
    raw = metadata.get(CONFIG_METADATA_KEY)
    if raw is None:
        return None
    try:
        return ModelConfig.from_dict(json.loads(raw))
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"{file} has an unreadable {CONFIG_METADATA_KEY} header: {exc}") from exc


def save_weights(model: nn.Module, path: str | Path, config: ModelConfig) -> Path:
    """Write the model's tensors as safetensors with its config in the header."""
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(file), metadata={CONFIG_METADATA_KEY: config.to_json()})
    return file


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Strictly load ``state`` into ``model``; any mismatch is reported key by key."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shape_errors = [
        f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in sorted(set(expected) & set(state))
        if tuple(state[key].shape) != tuple(expected[key].shape)
    ]
    if missing or unexpected or shape_errors:
        message = _mismatch_message(source, missing, unexpected, shape_errors)
        classes = _class_count_hint(state, expected)
        raise WeightsError(f"{classes} | {message}" if classes else message)
    model.load_state_dict(dict(state), strict=True)


_HEAD_NAMES = ("head", "classifier", "fc")


def _class_count_hint(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
) -> str | None:
    """'checkpoint has 600 classes, the model 400' when the classifier's output size differs."""
    for key in sorted(set(state) & set(expected)):
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "weight" and any(part in key.split(".") for part in _HEAD_NAMES):
            got, want = state[key].shape, expected[key].shape
            if got[:1] != want[:1] and got[1:] == want[1:]:
                return f"checkpoint has {got[0]} classes, the model was built for {want[0]}"
    return None


def _mismatch_message(
    source: str, missing: list[str], unexpected: list[str], shape_errors: list[str]
) -> str:
    parts = [f"weights in {source} do not fit the model"]
    if shape_errors:
        parts.append(f"{len(shape_errors)} shape mismatch(es): " + "; ".join(shape_errors[:5]))
    if missing:
        parts.append(f"{len(missing)} missing key(s), e.g. " + ", ".join(missing[:5]))
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s), e.g. " + ", ".join(unexpected[:5]))
    return " | ".join(parts)


def infer_num_classes(state: Mapping[str, torch.Tensor], head_key: str) -> int | None:
    """Number of classes from a classifier weight (out_features is dim 0), if present."""
    tensor = state.get(head_key)
    return int(tensor.shape[0]) if tensor is not None and tensor.ndim >= 1 else None
