"""``create_student``: the one way to build a student, optionally with local backbone weights."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from attacker.students.base import StudentModel
from attacker.students.config import StudentConfig, StudentPreprocessing, default_labels
from attacker.students.registry import get_student_entry
from attacker.students.weights import load_backbone_weights


def create_student(
    name: str,
    *,
    num_classes: int,
    preprocessing: StudentPreprocessing | None = None,
    labels: Sequence[str] | None = None,
    backbone_weights: Path | None = None,
    **arch_kwargs: Any,
) -> StudentModel:
    """Build the registered student ``name`` with a fresh ``num_classes``-way head.

    ``preprocessing`` defaults to the architecture's native input (``default_size`` with its
    family's mean/std). Architectures whose parameters depend on the input size (MViT, ViT
    frames) get the matching size kwargs from ``preprocessing``; an explicit kwarg that
    contradicts it raises ValueError. ``backbone_weights`` is a LOCAL file loaded into the
    backbone only (strict; every mismatch named). Unknown names raise KeyError listing the
    registered ones; unknown ``arch_kwargs`` raise TypeError from the builder.

    The model carries ``model.student_config`` (a :class:`StudentConfig`) and is in train mode.
    """
    entry = get_student_entry(name)
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    label_names = tuple(str(x) for x in labels) if labels is not None else None
    if label_names is not None and len(label_names) != num_classes:
        raise ValueError(f"{len(label_names)} labels given for num_classes={num_classes}")
    prep = preprocessing or entry.default_preprocessing()

    kwargs = dict(arch_kwargs)
    if entry.size_kwargs is not None:
        for key, value in entry.size_kwargs(prep.size).items():
            if key in kwargs and _jsonable(kwargs[key]) != _jsonable(value):
                raise ValueError(
                    f"{name}: {key}={kwargs[key]!r} contradicts the preprocessing size "
                    f"{prep.frames}x{prep.height}x{prep.width} (which needs {key}={value!r})"
                )
            kwargs[key] = value

    model = entry.builder(num_classes=num_classes, **kwargs)
    if not isinstance(model, StudentModel):
        raise TypeError(f"builder of {name!r} returned {type(model).__name__}, not StudentModel")
    if backbone_weights is not None:
        load_backbone_weights(model, Path(backbone_weights))
    model.student_config = StudentConfig(
        architecture=name,
        num_classes=num_classes,
        labels=label_names or default_labels(num_classes),
        preprocessing=prep,
        arch_kwargs=_jsonable(kwargs),
    )
    return model


def student_config(model: StudentModel) -> StudentConfig:
    """The StudentConfig that :func:`create_student` attached."""
    config = getattr(model, "student_config", None)
    if not isinstance(config, StudentConfig):
        raise TypeError("model was not built by create_student (no student_config attached)")
    return config


def _jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), when it is JSON at all.

    Non-JSON values (a callable, a module) are kept as they are; export refuses them later.
    """
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        if isinstance(value, Mapping):
            return {k: _jsonable(v) for k, v in value.items()}
        return value
