"""torchvision video architectures as students (randomly initialised; weights only from files).

Each torchvision model becomes the backbone with its classifier replaced by ``nn.Identity``, so
its own ``forward`` yields pooled features; the student's linear head takes the classifier's
place. A full torchvision checkpoint (local file) loads as backbone weights: its classifier keys
are listed in ``checkpoint_ignore``.

Input sizes (frames x height x width):

- ``r3d_18``, ``mc3_18``, ``r2plus1d_18``: any size (adaptive pooling); Kinetics weights use
  16x112x112. Total stride 1/8 in time (1/1 for mc3_18), 1/16 in space.
- ``s3d``: at least 8 frames and 32x32 pixels (its max-pools need them); the average pool is made
  adaptive so any larger size works. Kinetics weights use 16+x224x224.
- ``swin3d_t``: any size (windows are padded); Kinetics weights use 32x224x224.
- ``mvit_v2_s``: a FIXED size set at build time (``temporal_size``, ``spatial_size``): frames
  even, height and width multiples of 32. The factory passes the preprocessing size. Kinetics
  weights use 16x224x224.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn
from torchvision.models.video.mvit import MSBlockConfig, MViT
from torchvision.models.video.resnet import (
    BasicBlock,
    BasicStem,
    Conv2Plus1D,
    Conv3DNoTemporal,
    Conv3DSimple,
    R2Plus1dStem,
    VideoResNet,
)
from torchvision.models.video.s3d import S3D
from torchvision.models.video.swin_transformer import SwinTransformer3d

from attacker.students.base import StudentModel
from attacker.students.config import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    KINETICS_MEAN,
    KINETICS_STD,
    MVIT_MEAN,
    MVIT_STD,
)
from attacker.students.registry import register_student

FAMILY = "torchvision"
_RESNET_TINY: dict[str, Any] = {"layers": [1, 1, 1, 1]}


# --- VideoResNet: r3d_18, mc3_18, r2plus1d_18 -------------------------------------------------


def _video_resnet(
    conv_makers: Sequence[Any],
    stem: Callable[[], nn.Module],
    *,
    num_classes: int,
    layers: Sequence[int] = (2, 2, 2, 2),
    drop_rate: float = 0.0,
) -> StudentModel:
    if len(layers) != 4 or min(layers) < 1:
        raise ValueError(f"layers needs 4 positive block counts, got {list(layers)}")
    net = VideoResNet(BasicBlock, list(conv_makers), [int(n) for n in layers], stem)
    num_features = int(net.fc.in_features)
    net.fc = nn.Identity()
    return StudentModel(
        net,
        num_features=num_features,
        num_classes=num_classes,
        drop_rate=drop_rate,
        checkpoint_ignore=("fc.",),
    )


_RESNET_REGISTRATION: dict[str, Any] = {
    "family": FAMILY,
    "default_size": (16, 112, 112),
    "tiny_kwargs": _RESNET_TINY,
    "tiny_size": (4, 32, 32),
    "mean": KINETICS_MEAN,
    "std": KINETICS_STD,
}


@register_student("r3d_18", **_RESNET_REGISTRATION)
def r3d_18(*, num_classes: int, **kwargs: Any) -> StudentModel:
    """R3D-18: ResNet-18 with full 3x3x3 convolutions (Tran et al., 2018)."""
    return _video_resnet([Conv3DSimple] * 4, BasicStem, num_classes=num_classes, **kwargs)


@register_student("mc3_18", **_RESNET_REGISTRATION)
def mc3_18(*, num_classes: int, **kwargs: Any) -> StudentModel:
    """MC3-18: 3D convolutions in the first stage, 2D (1x3x3) in the others."""
    makers = [Conv3DSimple] + [Conv3DNoTemporal] * 3
    return _video_resnet(makers, BasicStem, num_classes=num_classes, **kwargs)


@register_student("r2plus1d_18", **_RESNET_REGISTRATION)
def r2plus1d_18(*, num_classes: int, **kwargs: Any) -> StudentModel:
    """R(2+1)D-18: every 3x3x3 convolution factorised into spatial + temporal."""
    return _video_resnet([Conv2Plus1D] * 4, R2Plus1dStem, num_classes=num_classes, **kwargs)


# --- S3D --------------------------------------------------------------------------------------


@register_student(
    "s3d",
    family=FAMILY,
    default_size=(16, 224, 224),
    tiny_kwargs={},
    tiny_size=(8, 32, 32),
    mean=KINETICS_MEAN,
    std=KINETICS_STD,
)
def s3d(*, num_classes: int, drop_rate: float = 0.0) -> StudentModel:
    """S3D (Xie et al., 2018): separable 3D Inception; adaptive pooling, >= 8x32x32 input."""
    net = S3D(num_classes=1, dropout=0.0)
    net.avgpool = nn.AdaptiveAvgPool3d(1)
    net.classifier = nn.Identity()
    # S3D.forward: features -> avgpool -> classifier -> mean over (T, H, W) = (B, 1024).
    return StudentModel(
        net,
        num_features=1024,
        num_classes=num_classes,
        drop_rate=drop_rate,
        checkpoint_ignore=("classifier.",),
    )


# --- Swin3D -----------------------------------------------------------------------------------


@register_student(
    "swin3d_t",
    family=FAMILY,
    default_size=(32, 224, 224),
    tiny_kwargs={"embed_dim": 8, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]},
    tiny_size=(4, 32, 32),
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
)
def swin3d_t(
    *,
    num_classes: int,
    patch_size: Sequence[int] = (2, 4, 4),
    embed_dim: int = 96,
    depths: Sequence[int] = (2, 2, 6, 2),
    num_heads: Sequence[int] = (3, 6, 12, 24),
    window_size: Sequence[int] = (8, 7, 7),
    stochastic_depth_prob: float = 0.1,
    drop_rate: float = 0.0,
) -> StudentModel:
    """Video Swin-T (Liu et al., 2022) on torchvision's SwinTransformer3d; any input size."""
    net = SwinTransformer3d(
        patch_size=[int(p) for p in patch_size],
        embed_dim=int(embed_dim),
        depths=[int(d) for d in depths],
        num_heads=[int(h) for h in num_heads],
        window_size=[int(w) for w in window_size],
        stochastic_depth_prob=stochastic_depth_prob,
        num_classes=1,
    )
    num_features = int(net.head.in_features)
    net.head = nn.Identity()
    return StudentModel(
        net,
        num_features=num_features,
        num_classes=num_classes,
        drop_rate=drop_rate,
        checkpoint_ignore=("head.",),
    )


# --- MViTv2 -----------------------------------------------------------------------------------


def mvit_v2_block_settings(
    *,
    embed_dim: int,
    depths: Sequence[int],
    num_heads: Sequence[int],
    kv_stride: int,
) -> list[MSBlockConfig]:
    """MViTv2 block settings in torchvision's per-block parameterisation.

    Stage s has width ``embed_dim * 2**s`` and ``num_heads[s]`` heads; the first block of every
    stage after the first pools queries by 2 in space and widens the channels; keys and values
    are pooled by ``kv_stride / 2**s`` in space (at least 1). With embed_dim=96,
    depths=(1, 2, 11, 2), heads=(1, 2, 4, 8), kv_stride=8 this is torchvision's mvit_v2_s.
    """
    if len(depths) != len(num_heads) or not depths or min(depths) < 1:
        raise ValueError(f"depths and num_heads need one positive entry per stage: {depths}")
    settings: list[MSBlockConfig] = []
    channels = int(embed_dim)
    for stage, (depth, heads) in enumerate(zip(depths, num_heads, strict=True)):
        width = int(embed_dim) * 2**stage
        kv = max(1, int(kv_stride) // 2**stage)
        for block in range(int(depth)):
            pool_q = 2 if stage > 0 and block == 0 else 1
            settings.append(
                MSBlockConfig(
                    num_heads=int(heads),
                    input_channels=channels,
                    output_channels=width,
                    kernel_q=[3, 3, 3],
                    kernel_kv=[3, 3, 3],
                    stride_q=[1, pool_q, pool_q],
                    stride_kv=[1, kv, kv],
                )
            )
            channels = width
    return settings


def _mvit_size_kwargs(size: tuple[int, int, int]) -> dict[str, Any]:
    frames, height, width = size
    return {"temporal_size": frames, "spatial_size": [height, width]}


@register_student(
    "mvit_v2_s",
    family=FAMILY,
    default_size=(16, 224, 224),
    tiny_kwargs={"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]},
    tiny_size=(4, 32, 32),
    mean=MVIT_MEAN,
    std=MVIT_STD,
    size_kwargs=_mvit_size_kwargs,
)
def mvit_v2_s(
    *,
    num_classes: int,
    temporal_size: int = 16,
    spatial_size: Sequence[int] = (224, 224),
    embed_dim: int = 96,
    depths: Sequence[int] = (1, 2, 11, 2),
    num_heads: Sequence[int] = (1, 2, 4, 8),
    kv_stride: int = 8,
    stochastic_depth_prob: float = 0.2,
    drop_rate: float = 0.0,
) -> StudentModel:
    """MViTv2-S (Li et al., 2022) on torchvision's MViT; fixed input size set at build time."""
    height, width = (int(s) for s in spatial_size)
    pools = 2 ** (len(depths) - 1)
    if temporal_size < 2 or temporal_size % 2 or height % (4 * pools) or width % (4 * pools):
        raise ValueError(
            f"mvit_v2_s needs an even frame count and height/width multiples of {4 * pools}, "
            f"got {temporal_size}x{height}x{width}"
        )
    net = MViT(
        spatial_size=(height, width),
        temporal_size=int(temporal_size),
        block_setting=mvit_v2_block_settings(
            embed_dim=embed_dim, depths=depths, num_heads=num_heads, kv_stride=kv_stride
        ),
        residual_pool=True,
        residual_with_cls_embed=False,
        rel_pos_embed=True,
        proj_after_attn=True,
        dropout=0.0,
        stochastic_depth_prob=stochastic_depth_prob,
    )
    num_features = int(net.norm.normalized_shape[0])
    net.head = nn.Identity()
    return StudentModel(
        net,
        num_features=num_features,
        num_classes=num_classes,
        drop_rate=drop_rate,
        checkpoint_ignore=("head.",),
    )
