"""Typed records that travel with every student: its input spec and how to rebuild it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Per-family normalisation constants (the values the public checkpoints of each family use).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
MVIT_MEAN = (0.45, 0.45, 0.45)
MVIT_STD = (0.225, 0.225, 0.225)
HALF_MEAN = (0.5, 0.5, 0.5)
QUARTER_STD = (0.25, 0.25, 0.25)

Triple = tuple[float, float, float]


def _triple(values: Any, what: str) -> Triple:
    floats = tuple(float(v) for v in values)
    if len(floats) != 3:
        raise ValueError(f"{what} needs 3 values (one per RGB channel), got {len(floats)}")
    return (floats[0], floats[1], floats[2])


@dataclass(frozen=True)
class StudentPreprocessing:
    """What a student consumes: float clips (B, 3, frames, height, width).

    uint8 RGB frames are sampled to ``frames``, resized to ``height`` x ``width``, scaled to
    [0, 1] and normalised per channel as ``(x - mean) / std``.
    """

    frames: int
    height: int
    width: int
    mean: Triple = HALF_MEAN
    std: Triple = QUARTER_STD

    def __post_init__(self) -> None:
        if min(self.frames, self.height, self.width) < 1:
            raise ValueError(f"preprocessing needs positive frames/height/width, got {self}")
        object.__setattr__(self, "mean", _triple(self.mean, "mean"))
        object.__setattr__(self, "std", _triple(self.std, "std"))
        if min(self.std) <= 0:
            raise ValueError(f"std values must be positive, got {self.std}")

    @property
    def size(self) -> tuple[int, int, int]:
        """(frames, height, width)."""
        return (self.frames, self.height, self.width)

    def to_dict(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "height": self.height,
            "width": self.width,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudentPreprocessing:
        return cls(
            frames=int(data["frames"]),
            height=int(data["height"]),
            width=int(data["width"]),
            mean=_triple(data.get("mean", HALF_MEAN), "mean"),
            std=_triple(data.get("std", QUARTER_STD), "std"),
        )


def default_labels(num_classes: int) -> tuple[str, ...]:
    return tuple(f"class_{i}" for i in range(num_classes))


@dataclass(frozen=True)
class StudentConfig:
    """Everything needed to rebuild and feed a student without the attacker's training code."""

    architecture: str
    num_classes: int
    labels: tuple[str, ...]
    preprocessing: StudentPreprocessing
    arch_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {self.num_classes}")
        if len(self.labels) != self.num_classes:
            raise ValueError(
                f"{self.architecture}: {len(self.labels)} labels given for "
                f"{self.num_classes} classes"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "architecture": self.architecture,
            "num_classes": self.num_classes,
            "labels": list(self.labels),
            "preprocessing": self.preprocessing.to_dict(),
            "arch_kwargs": dict(self.arch_kwargs),
        }

    def to_json(self) -> str:
        """Stable JSON; raises TypeError when an arch kwarg is not JSON-serialisable."""
        try:
            return json.dumps(self.to_dict(), sort_keys=True)
        except TypeError as exc:
            raise TypeError(
                f"{self.architecture}: arch_kwargs must be JSON values to be exported "
                f"({exc}); got {self.arch_kwargs!r}"
            ) from exc

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudentConfig:
        labels = tuple(str(x) for x in data["labels"])
        return cls(
            architecture=str(data["architecture"]),
            num_classes=int(data.get("num_classes", len(labels))),
            labels=labels,
            preprocessing=StudentPreprocessing.from_dict(data["preprocessing"]),
            arch_kwargs=dict(data.get("arch_kwargs") or {}),
        )

    @classmethod
    def from_json(cls, text: str) -> StudentConfig:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("a student config must be a JSON object")
        return cls.from_dict(data)
