"""Tiny CPU students: the defaults of the CPU range (16x32x32 clips).

Plain conv + BatchNorm + ReLU stacks with PyTorch's default initialisation, so they start learning
motion classes at once without warm-up tricks:

- ``tiny3d``: full 3x3x3 convolutions, widths 16-32-64-128, total stride 1/4 in time and 1/8 in
  space, global average pool; by default its input is widened with the frame differences
  (:class:`FrameDifferences`), which took a distilled student from 0.13 to 0.55 top-1 agreement
  after 313 steps on 1,250 queries (the extraction bench's recipe notes in the README).
- ``tiny_r2plus1d``: the same stages with each 3x3x3 convolution factorised into a spatial 1x3x3
  and a temporal 3x1x1 convolution (Tran et al., 2018), mid width chosen to match the 3D
  parameter count; the stem is spatial only (a temporal conv at full resolution would cost more
  than the rest of the net on CPU), the three later temporal convs still span 15 frames.
- ``tiny_frame``: a 2D CNN applied to every frame (1/8 in space), then temporal 3x1x1
  convolutions on the per-frame feature maps (1/4 in time) and a global pool.

All accept any clip size with at least one frame (the defaults are sized for 16x32x32).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from attacker.students.base import StudentModel
from attacker.students.config import HALF_MEAN, QUARTER_STD
from attacker.students.registry import register_student

TINY_SIZE = (16, 32, 32)
# Stage strides (time, height, width): 1/4 in time and 1/8 in space after four stages.
STAGE_STRIDES: tuple[tuple[int, int, int], ...] = ((1, 2, 2), (2, 2, 2), (2, 2, 2), (1, 1, 1))
DEFAULT_WIDTHS = (16, 32, 64, 128)


def _conv_bn_relu(
    in_channels: int,
    out_channels: int,
    kernel: tuple[int, int, int],
    stride: tuple[int, int, int],
) -> list[nn.Module]:
    padding = (kernel[0] // 2, kernel[1] // 2, kernel[2] // 2)
    return [
        nn.Conv3d(in_channels, out_channels, kernel, stride=stride, padding=padding, bias=False),
        nn.BatchNorm3d(out_channels),
        nn.ReLU(inplace=True),
    ]


def _factorised_mid(in_channels: int, out_channels: int) -> int:
    """Mid width of a (2+1)D pair with the parameter count of one 3x3x3 convolution."""
    full = 27 * in_channels * out_channels
    return max(1, round(full / (9 * in_channels + 3 * out_channels)))


def _check_stages(widths: Sequence[int], blocks: Sequence[int]) -> tuple[list[int], list[int]]:
    widths, blocks = [int(w) for w in widths], [int(b) for b in blocks]
    if len(widths) != len(STAGE_STRIDES) or len(blocks) != len(STAGE_STRIDES):
        raise ValueError(
            f"widths and blocks need {len(STAGE_STRIDES)} stages, got {widths} and {blocks}"
        )
    if min(widths) < 1 or min(blocks) < 1:
        raise ValueError(f"widths and blocks must be positive, got {widths} and {blocks}")
    return widths, blocks


class FrameDifferences(nn.Module):
    """(B, C, T, H, W) -> (B, 2C, T, H, W): the frames and their temporal differences
    ``x_t - x_{t-1}`` (0 for the first frame).

    Motion is what tells the classes of an action model apart; handing the first convolution
    the differences lets a student see it from the first step instead of discovering it after
    a long plateau at chance (measured in the extraction bench).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        diff = torch.zeros_like(x)
        diff[:, :, 1:] = x[:, :, 1:] - x[:, :, :-1]
        return torch.cat([x, diff], dim=1)


class Tiny3dBackbone(nn.Module):
    """Stages of Conv3d-BN-ReLU (the first conv of a stage strides), then a global average pool.

    With ``frame_differences`` the input is widened by :class:`FrameDifferences` first.
    """

    def __init__(
        self,
        *,
        widths: Sequence[int] = DEFAULT_WIDTHS,
        blocks: Sequence[int] = (1, 1, 1, 1),
        factorised: bool = False,
        frame_differences: bool = False,
    ) -> None:
        super().__init__()
        widths, blocks = _check_stages(widths, blocks)
        self.differences: nn.Module = FrameDifferences() if frame_differences else nn.Identity()
        layers: list[nn.Module] = []
        channels = 6 if frame_differences else 3
        for width, depth, stride in zip(widths, blocks, STAGE_STRIDES, strict=True):
            for i in range(depth):
                step = stride if i == 0 else (1, 1, 1)
                if factorised and not layers:
                    # (2+1)D stem: spatial only (see the module docstring).
                    layers += _conv_bn_relu(channels, width, (1, 3, 3), (1, step[1], step[2]))
                elif factorised:
                    mid = _factorised_mid(channels, width)
                    layers += _conv_bn_relu(channels, mid, (1, 3, 3), (1, step[1], step[2]))
                    layers += _conv_bn_relu(mid, width, (3, 1, 1), (step[0], 1, 1))
                else:
                    layers += _conv_bn_relu(channels, width, (3, 3, 3), step)
                channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.num_features = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.differences(x))  # B C T' H' W'
        return torch.flatten(self.pool(x), 1)


class TinyFrameBackbone(nn.Module):
    """2D Conv-BN-ReLU on every frame (three stride-2 stages: 1/8 in space), then temporal
    3x1x1 Conv-BN-ReLU on the frame feature maps (default strides 2, 2: 1/4 in time), pool.

    The temporal convolutions see where things are on the 1/8 maps, so they can tell motion
    directions apart, which a pool over per-frame vectors could not.
    """

    def __init__(
        self,
        *,
        widths: Sequence[int] = DEFAULT_WIDTHS,
        temporal_strides: Sequence[int] = (2, 2),
    ) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        temporal_strides = [int(s) for s in temporal_strides]
        if len(widths) != 4 or min(widths) < 1:
            raise ValueError(f"widths needs 4 positive values (3 spatial, 1 temporal): {widths}")
        if not temporal_strides or min(temporal_strides) < 1:
            raise ValueError(f"temporal_strides needs positive values, got {temporal_strides}")
        spatial: list[nn.Module] = []
        channels = 3
        for width in widths[:3]:
            spatial += [
                nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            channels = width
        temporal: list[nn.Module] = []
        for stride in temporal_strides:
            temporal += _conv_bn_relu(channels, widths[3], (3, 1, 1), (stride, 1, 1))
            channels = widths[3]
        self.spatial = nn.Sequential(*spatial)
        self.temporal = nn.Sequential(*temporal)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.num_features = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)  # B*T C H W
        maps = self.spatial(frames)  # B*T C' H' W'
        maps = maps.reshape(b, t, *maps.shape[1:]).transpose(1, 2)  # B C' T H' W'
        return torch.flatten(self.pool(self.temporal(maps)), 1)


def _tiny_student(
    backbone: Tiny3dBackbone | TinyFrameBackbone, num_classes: int, drop_rate: float
) -> StudentModel:
    return StudentModel(
        backbone, num_features=backbone.num_features, num_classes=num_classes, drop_rate=drop_rate
    )


_TINY_TEST: dict[str, Any] = {"widths": [8, 8, 16, 16]}
_TINY_REGISTRATION: dict[str, Any] = {
    "family": "tiny",
    "default_size": TINY_SIZE,
    "tiny_kwargs": _TINY_TEST,
    "mean": HALF_MEAN,
    "std": QUARTER_STD,
}


@register_student("tiny3d", **_TINY_REGISTRATION)
def tiny3d(
    *,
    num_classes: int,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    blocks: Sequence[int] = (1, 1, 1, 1),
    drop_rate: float = 0.0,
    frame_differences: bool = True,
) -> StudentModel:
    """Small 3D CNN (16-32-64-128, 1/4 time, 1/8 space) on frames and frame differences: the
    default CPU student."""
    backbone = Tiny3dBackbone(widths=widths, blocks=blocks, frame_differences=frame_differences)
    return _tiny_student(backbone, num_classes, drop_rate)


@register_student("tiny_r2plus1d", **_TINY_REGISTRATION)
def tiny_r2plus1d(
    *,
    num_classes: int,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    blocks: Sequence[int] = (1, 1, 1, 1),
    drop_rate: float = 0.0,
) -> StudentModel:
    """tiny3d with every 3x3x3 conv factorised into 1x3x3 spatial + 3x1x1 temporal."""
    backbone = Tiny3dBackbone(widths=widths, blocks=blocks, factorised=True)
    return _tiny_student(backbone, num_classes, drop_rate)


@register_student("tiny_frame", **_TINY_REGISTRATION)
def tiny_frame(
    *,
    num_classes: int,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    temporal_strides: Sequence[int] = (2, 2),
    drop_rate: float = 0.0,
) -> StudentModel:
    """Per-frame 2D CNN, then temporal convolutions on the frame feature maps, then pool."""
    backbone = TinyFrameBackbone(widths=widths, temporal_strides=temporal_strides)
    return _tiny_student(backbone, num_classes, drop_rate)
