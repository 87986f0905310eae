"""Source configs as YAML sees them: the :data:`SourceConfig` union and one-line errors.

Each source's config model lives next to its source (``NoiseConfig`` in ``noise.py``, ...) and is
registered with it (:mod:`attacker.sources.registry`). :data:`SourceConfig` joins the configs of
the built-in sources in one pydantic union discriminated by ``kind``; every model forbids unknown
fields, so a typo fails at load time. :func:`parse_source_config` validates a mapping (e.g. a YAML
section) against every source registered at the time of the call and reports a failure as one
line.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias, Union

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from attacker.sources._base import SourceConfigBase, SourceError, incomplete_source_models
from attacker.sources.registry import source_config_types

__all__ = [
    "SourceConfig",
    "SourceConfigError",
    "one_line",
    "parse_source_config",
    "source_config_union",
]


def source_config_union(types: tuple[type[SourceConfigBase], ...] | None = None) -> Any:
    """``Annotated[Union[<configs>], Field(discriminator="kind")]`` of ``types`` (default: every
    registered source's config, in registration order)."""
    types = source_config_types() if types is None else types
    if not types:
        raise SourceError("no query source is registered")
    return Annotated[Union[types], Field(discriminator="kind")]  # noqa: UP007


if TYPE_CHECKING:
    # Statically, a source config is any registered config; pydantic sees the union below.
    SourceConfig: TypeAlias = SourceConfigBase
else:
    SourceConfig = source_config_union()
    """Any built-in source's config, picked by its ``kind`` tag (``MixPart.source``, and
    ``attacker.config``'s query, eval and stealth sections)."""


# Models that name ``SourceConfig`` (a mix's parts) could not be built before the union existed.
for _model in incomplete_source_models():
    _model.model_rebuild(_types_namespace={"SourceConfig": SourceConfig})


class SourceConfigError(SourceError):
    """A source config failed validation; the message is one line naming the field."""


def parse_source_config(data: Mapping[str, Any] | BaseModel) -> SourceConfig:
    """Validate a mapping (or an already-built config) as the config of a registered source."""
    if isinstance(data, BaseModel):
        data = data.model_dump()
    try:
        return _adapter(source_config_types()).validate_python(data)
    except ValidationError as exc:
        raise SourceConfigError(one_line(exc)) from exc


@functools.lru_cache(maxsize=8)
def _adapter(types: tuple[type[SourceConfigBase], ...]) -> TypeAdapter[SourceConfigBase]:
    return TypeAdapter(source_config_union(types))


def one_line(exc: ValidationError) -> str:
    """``"source config: <loc>: <message>; ..."`` for every error of ``exc``."""
    problems = []
    for error in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in error["loc"]) or "<root>"
        problems.append(f"{loc}: {error['msg']}")
    return "source config: " + "; ".join(problems)
