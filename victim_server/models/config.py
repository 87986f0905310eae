"""Typed configuration that travels with every model: input spec and label names."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
UNIT_MEAN = (0.0, 0.0, 0.0)
UNIT_STD = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class InputSpec:
    """What the model consumes: float clips (B, 3, T, H, W) built from uint8 RGB frames.

    Pixels are scaled to [0, 1], then normalised as (x - mean) / std per channel.
    """

    frames: int
    height: int
    width: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if min(self.frames, self.height, self.width) < 1:
            raise ValueError(f"input spec needs positive frames/height/width, got {self}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("input spec needs 3 mean values and 3 positive std values")

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        """Shape of one uint8 clip on the wire: (T, H, W, 3)."""
        return (self.frames, self.height, self.width, 3)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        return cls(
            frames=int(data["frames"]),
            height=int(data["height"]),
            width=int(data["width"]),
            mean=_triple(data.get("mean", IMAGENET_MEAN)),
            std=_triple(data.get("std", IMAGENET_STD)),
        )


def _triple(values: Any) -> tuple[float, float, float]:
    floats = tuple(float(v) for v in values)
    if len(floats) != 3:
        raise ValueError(f"expected 3 values, got {len(floats)}")
    return (floats[0], floats[1], floats[2])


def default_labels(num_classes: int) -> tuple[str, ...]:
    return tuple(f"class_{i}" for i in range(num_classes))


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model and feed it: the 'pretrained cfg' of a checkpoint."""

    architecture: str
    num_classes: int
    input: InputSpec
    labels: tuple[str, ...]
    tag: str | None = None
    arch_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {self.num_classes}")
        if len(self.labels) != self.num_classes:
            raise ValueError(
                f"{self.architecture}: {len(self.labels)} labels given for "
                f"{self.num_classes} classes"
            )

    @property
    def model_tag(self) -> str:
        """'architecture.tag', as timm names a checkpoint (e.g. 'swin3d_micro.synthactions')."""
        return f"{self.architecture}.{self.tag}" if self.tag else self.architecture

    def with_labels(self, labels: tuple[str, ...]) -> ModelConfig:
        return replace(self, labels=labels, num_classes=len(labels))

    def to_dict(self) -> dict[str, Any]:
        return {
            "architecture": self.architecture,
            "tag": self.tag,
            "num_classes": self.num_classes,
            "input": self.input.to_dict(),
            "labels": list(self.labels),
            "arch_kwargs": self.arch_kwargs,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return cls(
            architecture=str(data["architecture"]),
            tag=data.get("tag"),
            num_classes=int(data["num_classes"]),
            input=InputSpec.from_dict(data["input"]),
            labels=tuple(str(x) for x in data["labels"]),
            arch_kwargs=dict(data.get("arch_kwargs", {})),
        )
