"""Frame-level students: a timm 2D image backbone on every frame, features pooled over time.

The B x T frames of a clip batch run through the 2D backbone as one (B*T) image batch; the
per-frame features (B, T, F) are then pooled over time:

- ``temporal="mean"``: plain average (appearance only; blind to the order of frames);
- ``temporal="conv"``: a residual temporal convolution (depthwise 3-tap over time, pointwise mix,
  BatchNorm, ReLU) before the average, so the student can respond to change between frames,
  which motion-defined classes need.

Backbones are built with ``pretrained=False``; image-pretrained weights come only from a local
file (``backbone_weights=`` in the factory), which may be a plain timm/ImageNet checkpoint of the
2D model: its classifier keys are dropped and the temporal layers keep their initialisation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from attacker.students.base import StudentModel
from attacker.students.config import IMAGENET_MEAN, IMAGENET_STD
from attacker.students.registry import register_student

FAMILY = "frame"
TEMPORAL_MODES = ("mean", "conv")
_ENCODER_PREFIX = "encoder."
_TEMPORAL_PREFIX = "temporal."
# timm arguments that would fetch or read weights behind the factory's back.
_FORBIDDEN_TIMM_KWARGS = frozenset(
    {"pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path"}
)


class TemporalConv(nn.Module):
    """Residual temporal mixing of per-frame features: x + ReLU(BN(pointwise(depthwise_t(x))))."""

    def __init__(self, dim: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"temporal kernel_size must be odd and positive, got {kernel_size}")
        self.depthwise = nn.Conv1d(
            dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=False
        )
        self.pointwise = nn.Conv1d(dim, dim, 1, bias=False)
        self.norm = nn.BatchNorm1d(dim)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B F T
        mixed: torch.Tensor = self.act(self.norm(self.pointwise(self.depthwise(x))))
        return x + mixed


class FrameBackbone(nn.Module):
    """(B, 3, T, H, W) -> 2D ``encoder`` on B*T frames -> (B, T, F) -> temporal pool -> (B, F)."""

    def __init__(self, encoder: nn.Module, num_features: int, *, temporal: str = "mean") -> None:
        super().__init__()
        if temporal not in TEMPORAL_MODES:
            raise ValueError(f"temporal must be one of {TEMPORAL_MODES}, got {temporal!r}")
        self.encoder = encoder
        self.num_features = int(num_features)
        self.temporal_mode = temporal
        self.temporal: nn.Module = (
            TemporalConv(self.num_features) if temporal == "conv" else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)  # B*T C H W
        features: torch.Tensor = self.encoder(frames)  # B*T F
        features = features.reshape(b, t, -1).transpose(1, 2)  # B F T
        return self.temporal(features).mean(dim=2)

    def adapt_checkpoint(
        self, state: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
        """A frame-student backbone state passes as is; a bare 2D image checkpoint goes to the
        encoder (its classifier dropped) and the temporal layers may stay missing."""
        if any(key.startswith((_ENCODER_PREFIX, _TEMPORAL_PREFIX)) for key in state):
            return state, ()
        drop = _classifier_prefixes(self.encoder)
        mapped = {
            _ENCODER_PREFIX + key: value
            for key, value in state.items()
            if not (drop and key.startswith(drop))
        }
        return mapped, (_TEMPORAL_PREFIX,)


def _classifier_prefixes(encoder: nn.Module) -> tuple[str, ...]:
    cfg = getattr(encoder, "pretrained_cfg", None) or {}
    names = cfg.get("classifier") if isinstance(cfg, dict) else None
    if isinstance(names, str):
        names = (names,)
    return tuple(f"{name}." for name in names or ())


def _frame_student(
    backbone: str,
    *,
    num_classes: int,
    temporal: str = "mean",
    drop_rate: float = 0.0,
    **timm_kwargs: Any,
) -> StudentModel:
    forbidden = sorted(_FORBIDDEN_TIMM_KWARGS & set(timm_kwargs))
    if forbidden:
        raise ValueError(
            f"students never download or read weights in the builder ({', '.join(forbidden)}); "
            "pass backbone_weights=PATH to create_student instead"
        )
    if temporal not in TEMPORAL_MODES:
        raise ValueError(f"temporal must be one of {TEMPORAL_MODES}, got {temporal!r}")
    import timm  # imported here: timm is slow to import and only frame students need it

    encoder = timm.create_model(backbone, pretrained=False, num_classes=0, **timm_kwargs)
    num_features = encoder.num_features
    if not isinstance(num_features, int):
        raise TypeError(f"timm model {backbone!r} has no integer num_features")
    return StudentModel(
        FrameBackbone(encoder, num_features, temporal=temporal),
        num_features=num_features,
        num_classes=num_classes,
        drop_rate=drop_rate,
    )


def _image_size_kwargs(size: tuple[int, int, int]) -> dict[str, Any]:
    _, height, width = size
    return {"img_size": height if height == width else [height, width]}


@register_student(
    "frame_vit_tiny",
    family=FAMILY,
    default_size=(8, 224, 224),
    tiny_kwargs={"patch_size": 8, "depth": 2},
    tiny_size=(4, 32, 32),
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    size_kwargs=_image_size_kwargs,
)
def frame_vit_tiny(
    *,
    num_classes: int,
    img_size: int | list[int] = 224,
    patch_size: int = 16,
    temporal: str = "mean",
    drop_rate: float = 0.0,
    **timm_kwargs: Any,
) -> StudentModel:
    """timm ViT-Ti per frame (img_size/patch_size configurable; frames must be img_size)."""
    return _frame_student(
        "vit_tiny_patch16_224",
        num_classes=num_classes,
        temporal=temporal,
        drop_rate=drop_rate,
        img_size=img_size,
        patch_size=patch_size,
        **timm_kwargs,
    )


@register_student(
    "frame_resnet50",
    family=FAMILY,
    default_size=(8, 224, 224),
    tiny_kwargs={"layers": [1, 1, 1, 1], "temporal": "conv"},
    tiny_size=(4, 32, 32),
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
)
def frame_resnet50(
    *, num_classes: int, temporal: str = "mean", drop_rate: float = 0.0, **timm_kwargs: Any
) -> StudentModel:
    """timm ResNet-50 per frame; any frame size (global pooling)."""
    return _frame_student(
        "resnet50", num_classes=num_classes, temporal=temporal, drop_rate=drop_rate, **timm_kwargs
    )


@register_student(
    "frame_timm",
    family=FAMILY,
    default_size=(8, 224, 224),
    tiny_kwargs={"backbone": "resnet10t", "temporal": "conv"},
    tiny_size=(4, 32, 32),
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
)
def frame_timm(
    *,
    num_classes: int,
    backbone: str,
    temporal: str = "mean",
    drop_rate: float = 0.0,
    **timm_kwargs: Any,
) -> StudentModel:
    """Any timm 2D model per frame: ``backbone="<timm name>"``; extra kwargs go to timm."""
    return _frame_student(
        backbone, num_classes=num_classes, temporal=temporal, drop_rate=drop_rate, **timm_kwargs
    )
