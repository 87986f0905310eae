"""Video Swin Transformer (Liu et al., 2022) on torchvision's ``SwinTransformer3d``.

``swin3d_t`` is the Kinetics-400 architecture; its checkpoint (``swin3d_t-7615ae03.pth``) is
loaded from a local file by the factory. ``swin3d_micro`` is a CPU-sized variant used by the
embedded victim and by tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.video.swin_transformer import SwinTransformer3d

from victim_server.models.config import IMAGENET_MEAN, IMAGENET_STD, InputSpec
from victim_server.models.registry import register_model

KINETICS400_INPUT = InputSpec(
    frames=32, height=224, width=224, mean=IMAGENET_MEAN, std=IMAGENET_STD
)
MICRO_INPUT = InputSpec(
    frames=16, height=32, width=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)
)


class ConvStemEmbed3d(nn.Module):
    """Patch embedding by a few strided 3x3x3 convolutions instead of one linear projection.

    Early convolutions make transformers train faster and more stably (Xiao et al., 2021, "Early
    Convolutions Help Transformers See Better"). On motion-only SynthActions the linear 4x4x4
    projection left the micro model at chance for hundreds of steps where this stem learns at
    once. Output layout matches torchvision's PatchEmbed3d: (B, T', H', W', C).
    """

    def __init__(
        self,
        patch_size: list[int],
        in_channels: int = 3,
        embed_dim: int = 96,
        norm_layer: Callable[..., nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.patch_size = tuple(patch_size)
        stages = max(int(math.log2(p)) for p in patch_size)
        if any(p != 2 ** int(math.log2(p)) for p in patch_size):
            raise ValueError(f"conv stem needs power-of-two patch sizes, got {patch_size}")
        layers: list[nn.Module] = []
        channels = in_channels
        for i in range(stages):
            out = max(8, embed_dim // 2 ** (stages - 1 - i))
            t, h, w = (2 if p >= 2 ** (i + 1) else 1 for p in patch_size)
            stride = (t, h, w)
            layers += [
                nn.Conv3d(channels, out, kernel_size=3, stride=stride, padding=1, bias=False),
                nn.BatchNorm3d(out),
                nn.GELU(),
            ]
            channels = out
        layers.append(nn.Conv3d(channels, embed_dim, kernel_size=1))
        self.stem = nn.Sequential(*layers)
        self.norm = norm_layer(embed_dim) if norm_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, t, h, w = x.shape
        pads = [(-size) % p for size, p in zip((t, h, w), self.patch_size, strict=True)]
        x = F.pad(x, (0, pads[2], 0, pads[1], 0, pads[0]))
        x = self.stem(x).permute(0, 2, 3, 4, 1)  # B T' H' W' C
        return self.norm(x)


class Swin3d(SwinTransformer3d):
    """torchvision's SwinTransformer3d with the feature/head split every VidSteal model offers."""

    head: nn.Linear

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_features = int(self.head.in_features)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # B T' H' W' C
        x = self.pos_drop(x)
        x = self.features(x)
        x = self.norm(x)
        x = x.permute(0, 4, 1, 2, 3)  # B C T' H' W'
        return torch.flatten(self.avgpool(x), 1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        self.head = nn.Linear(self.num_features, num_classes)


def _swin3d(
    *,
    num_classes: int,
    patch_size: list[int],
    embed_dim: int,
    depths: list[int],
    num_heads: list[int],
    window_size: list[int],
    stochastic_depth_prob: float = 0.1,
    stem: str = "linear",
    **kwargs: Any,
) -> Swin3d:
    if stem not in ("linear", "conv"):
        raise ValueError(f"stem must be 'linear' or 'conv', got {stem!r}")
    if stem == "conv":
        kwargs["patch_embed"] = ConvStemEmbed3d
    return Swin3d(
        patch_size=list(patch_size),
        embed_dim=embed_dim,
        depths=list(depths),
        num_heads=list(num_heads),
        window_size=list(window_size),
        stochastic_depth_prob=stochastic_depth_prob,
        num_classes=num_classes,
        **kwargs,
    )


def _kinetics400_labels(num_classes: int) -> tuple[str, ...] | None:
    from torchvision.models.video import Swin3D_T_Weights

    categories = Swin3D_T_Weights.KINETICS400_V1.meta["categories"]
    return tuple(categories) if num_classes == len(categories) else None


_TINY_TEST = {"embed_dim": 8, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]}


@register_model(
    "swin3d_t",
    family="swin3d",
    default_input=KINETICS400_INPUT,
    default_num_classes=400,
    default_labels=_kinetics400_labels,
    test_kwargs=_TINY_TEST,
    test_input=InputSpec(frames=4, height=32, width=32),
)
def swin3d_t(*, num_classes: int = 400, **kwargs: Any) -> Swin3d:
    """Swin3D-T (28M parameters), torchvision's Kinetics-400 layout."""
    params: dict[str, Any] = {
        "patch_size": [2, 4, 4],
        "embed_dim": 96,
        "depths": [2, 2, 6, 2],
        "num_heads": [3, 6, 12, 24],
        "window_size": [8, 7, 7],
        "stochastic_depth_prob": 0.1,
    }
    return _swin3d(num_classes=num_classes, **{**params, **kwargs})


@register_model(
    "swin3d_micro",
    family="swin3d",
    default_input=MICRO_INPUT,
    default_num_classes=16,
    test_kwargs={"embed_dim": 8},
    test_input=InputSpec(frames=8, height=32, width=32),
)
def swin3d_micro(*, num_classes: int = 16, **kwargs: Any) -> Swin3d:
    """CPU-sized Swin3D for 16x32x32 clips: conv stem to 4x4x4 patches, one window at stage 1."""
    params: dict[str, Any] = {
        "patch_size": [4, 4, 4],
        "embed_dim": 32,
        "depths": [1, 1, 2, 1],
        "num_heads": [2, 4, 8, 16],
        "window_size": [4, 8, 8],
        "stochastic_depth_prob": 0.0,
        "stem": "conv",
    }
    return _swin3d(num_classes=num_classes, **{**params, **kwargs})
