"""Bring-your-own models: a TorchScript file or a ``torch.export`` program, plus labels and an
input spec. They are served as they are; they cannot be fine-tuned or have their head reset.

- TorchScript (``.pt``/``.pth``/``.ts``/``.torchscript``): ``torch.jit.load``.
- torch.export (``.pt2``): ``torch.export.load`` and ``.module()``.

Both must map float (B, 3, T, H, W), normalised per the input spec, to logits (B, C).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from victim_server.models.config import InputSpec, ModelConfig, default_labels
from victim_server.models.registry import register_model
from victim_server.models.weights import WeightsError

_SIZE_SPEC = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*x\s*(\d+)\s*$")


def parse_input_spec(value: str | Path | InputSpec | None) -> InputSpec | None:
    """'TxHxW' (ImageNet mean/std), a JSON file with InputSpec fields, or an InputSpec."""
    if value is None or isinstance(value, InputSpec):
        return value
    text = str(value)
    match = _SIZE_SPEC.match(text)
    if match:
        frames, height, width = (int(g) for g in match.groups())
        return InputSpec(frames=frames, height=height, width=width)
    path = Path(text)
    if not path.is_file():
        raise WeightsError(f"input spec {text!r} is neither 'TxHxW' nor a JSON file")
    try:
        return InputSpec.from_dict(json.loads(path.read_text()))
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"{path} is not a valid input spec: {exc}") from exc


class ExternalVideoModel(nn.Module):
    """Wraps a loaded program; ``forward`` only."""

    def __init__(self, program: nn.Module | Any, num_classes: int) -> None:
        super().__init__()
        self.program = program
        self.num_classes = num_classes
        self.num_features = 0

    def train(self, mode: bool = True) -> ExternalVideoModel:
        # Exported programs refuse train()/eval(); a served program has one mode anyway.
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.program(x)
        if isinstance(logits, tuple | list):
            logits = logits[0]
        return logits

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("a bring-your-own program exposes logits only")

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("a bring-your-own program exposes logits only")

    def reset_classifier(self, num_classes: int) -> None:
        raise NotImplementedError("a bring-your-own program cannot be given a new head")


def _load_external(
    kind: str,
    *,
    path: Path,
    labels: tuple[str, ...] | None,
    input_spec: InputSpec | str | None,
    **unused: Any,
) -> nn.Module:
    if unused:
        raise WeightsError(f"{kind} models take no architecture arguments, got {sorted(unused)}")
    spec = parse_input_spec(input_spec)
    if spec is None:
        raise WeightsError(f"{kind} models need an input spec ('TxHxW' or a JSON file)")
    if not path.is_file():
        raise WeightsError(f"model file not found: {path}")
    try:
        if kind == "export":
            program: Any = torch.export.load(str(path)).module()
        else:
            program = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises many types for a bad archive
        raise WeightsError(f"cannot load {path} as a {kind} program: {exc}") from exc
    with torch.inference_mode():
        probe = program(torch.zeros(1, 3, spec.frames, spec.height, spec.width))
    probe = probe[0] if isinstance(probe, tuple | list) else probe
    if not isinstance(probe, torch.Tensor) or probe.ndim != 2:
        raise WeightsError(f"{path} must return logits (B, C) for input (1, 3, T, H, W)")
    num_classes = int(probe.shape[1])
    if labels is not None and len(labels) != num_classes:
        raise WeightsError(f"{len(labels)} labels given but {path} outputs {num_classes} classes")
    model = ExternalVideoModel(program, num_classes)
    model.model_config = ModelConfig(  # type: ignore[assignment]
        architecture=kind,
        tag=path.stem,
        num_classes=num_classes,
        input=spec,
        labels=labels or default_labels(num_classes),
    )
    return model


_PLACEHOLDER = InputSpec(frames=16, height=112, width=112)


@register_model(
    "torchscript",
    family="custom",
    default_input=_PLACEHOLDER,
    default_num_classes=0,
    needs_weights=True,
)
def torchscript_model(*, path: Path, **kwargs: Any) -> nn.Module:
    """A TorchScript video classifier from a local file."""
    return _load_external("torchscript", path=path, **kwargs)


@register_model(
    "export",
    family="custom",
    default_input=_PLACEHOLDER,
    default_num_classes=0,
    needs_weights=True,
)
def exported_model(*, path: Path, **kwargs: Any) -> nn.Module:
    """A ``torch.export`` program (.pt2) from a local file."""
    return _load_external("export", path=path, **kwargs)
