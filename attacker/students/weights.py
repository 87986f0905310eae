"""Local weight files for students: safetensors, or ``torch.load(weights_only=True)``.

Nothing here downloads. Loading is strict: every missing, unexpected or mis-shaped key is
reported by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from attacker.students.base import StateDict, StudentModel

SAFETENSORS_SUFFIXES = frozenset({".safetensors"})
TORCH_SUFFIXES = frozenset({".pt", ".pth", ".bin", ".ckpt"})
# Keys under which common training scripts nest the real state dict.
_NESTED_STATE_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "module")
_BACKBONE_PREFIX = "backbone."
_HEAD_PREFIX = "head."


class StudentWeightsError(ValueError):
    """A weights file is missing, unreadable, or does not fit the student."""


def read_state_dict(path: str | Path) -> StateDict:
    """A tensor state dict from a local file, never unpickling arbitrary objects."""
    file = Path(path)
    if not file.is_file():
        raise StudentWeightsError(f"weights file not found: {file}")
    suffix = file.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        try:
            with safe_open(str(file), framework="pt", device="cpu") as handle:
                return {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        except Exception as exc:  # safetensors raises its own SafetensorError
            raise StudentWeightsError(f"cannot read {file} as safetensors: {exc}") from exc
    if suffix in TORCH_SUFFIXES:
        try:
            loaded = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:  # UnpicklingError, RuntimeError, ...
            raise StudentWeightsError(
                f"cannot read {file} as a weights-only checkpoint: {exc}"
            ) from exc
        return _unwrap(loaded, file)
    raise StudentWeightsError(
        f"unsupported weights format {suffix!r} for {file}; use .safetensors or one of "
        f"{sorted(TORCH_SUFFIXES)}"
    )


def _unwrap(loaded: object, file: Path) -> StateDict:
    while isinstance(loaded, Mapping):
        inner = next(
            (loaded[k] for k in _NESTED_STATE_KEYS if isinstance(loaded.get(k), Mapping)), None
        )
        if inner is None:
            break
        loaded = inner
    if isinstance(loaded, Mapping):
        tensors = {str(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    raise StudentWeightsError(f"{file} holds no tensor state dict")


def load_strict(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    source: str,
    allowed_missing: tuple[str, ...] = (),
) -> None:
    """Load ``state`` into ``module``; any mismatch raises StudentWeightsError naming the keys.

    Keys starting with a prefix in ``allowed_missing`` may be absent from ``state`` (they keep
    their current values); nothing else may be missing, unexpected or differently shaped.
    """
    expected = module.state_dict()
    missing = sorted(
        key
        for key in set(expected) - set(state)
        if not (allowed_missing and key.startswith(allowed_missing))
    )
    unexpected = sorted(set(state) - set(expected))
    shape_errors = [
        f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in sorted(set(expected) & set(state))
        if tuple(state[key].shape) != tuple(expected[key].shape)
    ]
    if missing or unexpected or shape_errors:
        parts = [f"weights in {source} do not fit the {type(module).__name__}"]
        if shape_errors:
            parts.append(f"{len(shape_errors)} shape mismatch(es): " + "; ".join(shape_errors[:5]))
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. " + ", ".join(missing[:5]))
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. " + ", ".join(unexpected[:5]))
        raise StudentWeightsError(" | ".join(parts))
    module.load_state_dict(dict(state), strict=not allowed_missing)


def backbone_state(state: Mapping[str, torch.Tensor]) -> StateDict:
    """The backbone part of ``state``.

    A whole-student state dict (keys ``backbone.*`` and ``head.*``, e.g. an exported student)
    gives its ``backbone.*`` tensors with the prefix stripped; a DistributedDataParallel
    ``module.`` prefix is dropped; anything else is taken as a backbone checkpoint as is.
    """
    tensors = dict(state)
    if tensors and all(key.startswith("module.") for key in tensors):
        tensors = {key.removeprefix("module."): value for key, value in tensors.items()}
    if any(key.startswith(_BACKBONE_PREFIX) for key in tensors) and all(
        key.startswith((_BACKBONE_PREFIX, _HEAD_PREFIX)) for key in tensors
    ):
        return {
            key.removeprefix(_BACKBONE_PREFIX): value
            for key, value in tensors.items()
            if key.startswith(_BACKBONE_PREFIX)
        }
    return tensors


def load_backbone_weights(model: StudentModel, path: str | Path) -> None:
    """Load a LOCAL backbone checkpoint into ``model.backbone`` only; the head is left as is.

    Accepts a backbone state dict, a whole exported student, or the upstream checkpoint of the
    wrapped architecture (its classifier keys are ignored, e.g. torchvision's ``fc.*``).
    """
    state = backbone_state(read_state_dict(path))
    adapted, allowed_missing = model.adapt_backbone_state(state)
    load_strict(model.backbone, adapted, source=str(path), allowed_missing=allowed_missing)
