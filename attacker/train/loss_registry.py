"""The loss registry: ``@register_loss(name)`` on a ``DistillLoss`` class; the table it fills is the
only list of loss names.

A loss's parameters are its constructor's arguments. ``validate_loss_params`` checks a YAML
mapping against that signature (unknown names, then types, via a pydantic model built from the
annotations), then runs the constructor once so its own range checks speak too. Every failure is
a ``ValueError`` whose one-line message names the loss and the parameter.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from .loss_base import DistillLoss

__all__ = [
    "LOSSES",
    "get_loss_class",
    "loss_names",
    "loss_parameters",
    "register_loss",
    "validate_loss_params",
]

L = TypeVar("L", bound=type[DistillLoss])

_REGISTRY: dict[str, type[DistillLoss]] = {}

LOSSES: Mapping[str, type[DistillLoss]] = MappingProxyType(_REGISTRY)
"""Read-only view of the registry: name -> loss class."""


def register_loss(name: str) -> Callable[[L], L]:
    """Class decorator: make ``cls`` buildable as ``name`` (one name per class)."""

    def add(cls: L) -> L:
        if not (isinstance(cls, type) and issubclass(cls, DistillLoss)):
            raise TypeError(f"@register_loss({name!r}) needs a DistillLoss subclass, got {cls!r}")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"loss {name!r} is already registered to {_REGISTRY[name].__name__}")
        _REGISTRY[name] = cls
        return cls

    return add


def loss_names() -> list[str]:
    """Every registered loss name, sorted."""
    return sorted(_REGISTRY)


def get_loss_class(name: str) -> type[DistillLoss]:
    """The class registered as ``name``; ValueError naming the choices if there is none."""
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ValueError(f"unknown loss {name!r}; choose one of {loss_names()}")
    return cls


def loss_parameters(name: str) -> dict[str, inspect.Parameter]:
    """The constructor parameters of loss ``name`` (``self`` and ``*args/**kwargs`` left out)."""
    params = inspect.signature(get_loss_class(name).__init__).parameters.values()
    return {
        p.name: p
        for p in params
        if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


_PARAM_MODELS: dict[str, type[BaseModel]] = {}


def _params_model(cls: type[DistillLoss]) -> type[BaseModel]:
    """A pydantic model of ``cls``'s constructor arguments: annotated types, same defaults."""
    key = f"{cls.__module__}.{cls.__qualname__}"
    if key not in _PARAM_MODELS:
        _PARAM_MODELS[key] = _build_params_model(cls)
    return _PARAM_MODELS[key]


def _build_params_model(cls: type[DistillLoss]) -> type[BaseModel]:
    hints = typing.get_type_hints(cls.__init__)
    fields: dict[str, Any] = {}
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[p.name] = (hints.get(p.name, Any), default)
    return create_model(f"{cls.__name__}Params", __config__=ConfigDict(extra="forbid"), **fields)


def validate_loss_params(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` checked against loss ``name``'s constructor and coerced to its types.

    Returns only the given parameters (defaults stay implicit). Raises ValueError (one line) for an
    unknown loss, an unknown parameter, a value of the wrong type, or one the constructor refuses.
    """
    cls = get_loss_class(name)
    accepted = loss_parameters(name)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"loss {name!r} has no parameter(s) {unknown}; it takes {sorted(accepted)}"
        )
    try:
        model = _params_model(cls).model_validate(dict(params))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ValueError(f"loss {name!r} parameter {where!r}: {first['msg']}") from None
    values = {key: getattr(model, key) for key in params}
    try:
        cls(**values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"loss {name!r}: {exc}") from None
    return values
