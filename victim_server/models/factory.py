"""``create_model``: the one way to build a model, with or without local weights."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from victim_server.models.config import InputSpec, ModelConfig, default_labels
from victim_server.models.custom import parse_input_spec
from victim_server.models.embedded import packaged_weights_path, resolve_alias
from victim_server.models.registry import get_model_entry
from victim_server.models.weights import WeightsError, load_into, load_state_dict, read_config

LabelsArg = Sequence[str] | str | Path | None


def split_model_name_tag(name: str) -> tuple[str, str | None]:
    """'swin3d_micro.synthactions' -> ('swin3d_micro', 'synthactions'); no tag -> None."""
    arch, _, tag = name.partition(".")
    return arch, tag or None


def read_labels(source: str | Path) -> tuple[str, ...]:
    """Labels from a JSON list or a text file with one label per line."""
    path = Path(source)
    if not path.is_file():
        raise WeightsError(f"labels file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        data = json.loads(text)
        if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
            raise WeightsError(f"{path} must hold a JSON list of label strings")
        return tuple(data)
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    weights: str | Path | None = None,
    labels: LabelsArg = None,
    input_spec: InputSpec | str | Path | None = None,
    **arch_kwargs: Any,
) -> nn.Module:
    """Build a registered model, optionally loading local weights, and attach its ModelConfig.

    ``name`` is 'architecture' or 'architecture.tag'; a tag with committed weights (the embedded
    victim, alias 'embedded') loads them when ``weights`` is not given. Conflicts between the
    arguments and a checkpoint's stored config fail loudly instead of being silently overridden.
    The returned module has ``model_config`` (a :class:`ModelConfig`) and is in eval mode.
    """
    arch, tag = split_model_name_tag(resolve_alias(name))
    entry = get_model_entry(arch)
    if weights is None and tag is not None:
        packaged = packaged_weights_path(f"{arch}.{tag}")
        if not packaged.is_file():
            raise WeightsError(
                f"no committed weights for {arch}.{tag} at {packaged}; "
                "train them with `python -m victim_server train-embedded` or pass weights="
            )
        weights = packaged
    label_names = _labels_argument(labels)
    input_spec = parse_input_spec(input_spec)

    if entry.needs_weights:
        if weights is None:
            raise WeightsError(f"model {arch!r} is loaded from a file: pass weights=PATH")
        model = entry.builder(
            path=Path(weights), labels=label_names, input_spec=input_spec, **arch_kwargs
        )
        return model.eval()

    stored = read_config(weights) if weights is not None else None
    if stored is not None:
        _check_stored(stored, arch=arch, num_classes=num_classes, arch_kwargs=arch_kwargs)
        arch_kwargs = {**stored.arch_kwargs, **arch_kwargs}
        label_names = label_names or stored.labels
        input_spec = input_spec or stored.input
        tag = tag or stored.tag

    classes = num_classes or (len(label_names) if label_names else entry.default_num_classes)
    if label_names is not None and len(label_names) != classes:
        raise WeightsError(f"{len(label_names)} labels given for num_classes={classes}")
    if label_names is None and entry.default_labels is not None:
        label_names = entry.default_labels(classes)

    model = entry.builder(num_classes=classes, **arch_kwargs)
    if weights is not None:
        load_into(model, load_state_dict(weights), source=str(weights))
    model.model_config = ModelConfig(  # type: ignore[assignment]
        architecture=arch,
        tag=tag,
        num_classes=classes,
        input=input_spec or entry.default_input,
        labels=label_names or default_labels(classes),
        arch_kwargs=dict(arch_kwargs),
    )
    return model.eval()


def model_config(model: nn.Module) -> ModelConfig:
    """The ModelConfig that :func:`create_model` attached."""
    config = getattr(model, "model_config", None)
    if not isinstance(config, ModelConfig):
        raise TypeError("model was not built by create_model (no model_config attached)")
    return config


def _labels_argument(labels: LabelsArg) -> tuple[str, ...] | None:
    if labels is None:
        return None
    if isinstance(labels, str | Path):
        return read_labels(labels)
    return tuple(str(x) for x in labels)


def _check_stored(
    stored: ModelConfig, *, arch: str, num_classes: int | None, arch_kwargs: dict[str, Any]
) -> None:
    if stored.architecture != arch:
        raise WeightsError(f"checkpoint was saved for {stored.architecture!r}, not {arch!r}")
    if num_classes is not None and num_classes != stored.num_classes:
        raise WeightsError(
            f"checkpoint has {stored.num_classes} classes but num_classes={num_classes} was asked"
        )
    for key, value in arch_kwargs.items():
        if key in stored.arch_kwargs and stored.arch_kwargs[key] != value:
            raise WeightsError(
                f"checkpoint was saved with {key}={stored.arch_kwargs[key]!r}, not {value!r}"
            )
