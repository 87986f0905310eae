"""Model registry: builders stored by name, as timm's ``register_model`` does."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch
from torch import nn

from victim_server.models.config import InputSpec


@runtime_checkable
class VideoClassifier(Protocol):
    """What every registered video model offers, so training and evaluation work with any of them.

    ``forward`` takes float clips (B, 3, T, H, W) normalised per the model's InputSpec.
    """

    num_features: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, num_features)."""
        ...

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) from pooled features."""
        ...

    def reset_classifier(self, num_classes: int) -> None: ...


ModelBuilder = Callable[..., nn.Module]
"""``builder(*, num_classes: int, **arch_kwargs) -> nn.Module``; never loads weights itself."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: ModelBuilder
    family: str
    default_input: InputSpec
    default_num_classes: int
    # Label names a checkpoint of this architecture carries, when its class count matches.
    default_labels: Callable[[int], tuple[str, ...] | None] | None = None
    # Keyword arguments that make the model small enough for a CPU forward/backward in tests,
    # and the input spec to test it at.
    test_kwargs: dict[str, Any] = field(default_factory=dict)
    test_input: InputSpec | None = None
    # Models that need a file to exist at all (TorchScript, torch.export) are not buildable bare.
    needs_weights: bool = False
    description: str = ""


_REGISTRY: dict[str, ModelEntry] = {}

B = TypeVar("B", bound=ModelBuilder)


def register_model(
    name: str,
    *,
    family: str,
    default_input: InputSpec,
    default_num_classes: int,
    default_labels: Callable[[int], tuple[str, ...] | None] | None = None,
    test_kwargs: dict[str, Any] | None = None,
    test_input: InputSpec | None = None,
    needs_weights: bool = False,
    description: str = "",
) -> Callable[[B], B]:
    """Decorator that files a builder under ``name``; a second registration is a bug."""

    def decorate(builder: B) -> B:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = ModelEntry(
            name=name,
            builder=builder,
            family=family,
            default_input=default_input,
            default_num_classes=default_num_classes,
            default_labels=default_labels,
            test_kwargs=dict(test_kwargs or {}),
            test_input=test_input,
            needs_weights=needs_weights,
            description=description or (builder.__doc__ or "").strip().split("\n")[0],
        )
        return builder

    return decorate


def get_model_entry(name: str) -> ModelEntry:
    _import_model_modules()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise KeyError(f"unknown model {name!r}; registered: {known}") from None


def list_models(*, family: str | None = None, buildable: bool | None = None) -> list[str]:
    _import_model_modules()
    return sorted(
        name
        for name, entry in _REGISTRY.items()
        if (family is None or entry.family == family)
        and (buildable is None or buildable != entry.needs_weights)
    )


def _import_model_modules() -> None:
    # Importing the model modules runs their @register_model decorators.
    from victim_server.models import custom, movinet, swin3d  # noqa: F401
