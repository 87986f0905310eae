"""pytorchvideo architectures as students (randomly initialised; weights only from local files).

Built with ``pytorchvideo.models`` only (``pytorchvideo.transforms`` does not import on the pinned
torchvision, and nothing here needs it); pytorchvideo is imported when a builder runs, so listing
the registry does not load it.

- ``x3d_xs``: X3D-XS (Feichtenhofer, CVPR 2020), ``create_x3d`` with the XS settings (width 2.0,
  depth 2.2, 2048-d projected head). X3D's head pools with a fixed kernel computed from the
  input size; here that pool is adaptive, so the model takes any clip (it is parameter-free, so
  upstream checkpoints still fit). X3D-XS and X3D-S differ only in their input (4 vs 13 frames
  at 160x160); at the range's clip size they are the same network, so only XS is registered.
  Its depthwise 3x3x3 convolutions are slow to back-propagate on CPU (PyTorch's grouped conv3d
  backward): fewer frames (``student.frames: 4``, X3D-XS's own) make it 4x cheaper.
- ``slowfast_r18``: SlowFast (Feichtenhofer et al., ICCV 2019) with pytorchvideo's depth-18
  stages (one bottleneck block per stage): a slow pathway on every ``alpha``-th frame (width
  ``width``) and a fast one on every frame (``width / 8``), fused fast-to-slow after the stem
  and each stage; both are pooled adaptively and concatenated.

Both take any clip of at least one frame and 1x1 pixels (total stride 1/32 in space). Their
normalisation is the one pytorchvideo's Kinetics checkpoints use: mean 0.45, std 0.225.
"""

from __future__ import annotations

import warnings
from types import ModuleType
from typing import Any

import torch
from torch import nn

from attacker.students.base import StudentModel
from attacker.students.config import Triple
from attacker.students.registry import register_student

FAMILY = "pytorchvideo"
PYTORCHVIDEO_MEAN: Triple = (0.45, 0.45, 0.45)
PYTORCHVIDEO_STD: Triple = (0.225, 0.225, 0.225)
SLOWFAST_BETA = 8  # slow width / fast width, pytorchvideo's default channel reduction ratio


def _models(name: str) -> ModuleType:
    """``pytorchvideo.models.<name>``, imported quietly (fvcore warns about torch.jit.script)."""
    import importlib

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
        return importlib.import_module(f"pytorchvideo.models.{name}")


# --- X3D --------------------------------------------------------------------------------------


class X3dBackbone(nn.Module):
    """X3D's stem and stages, then its projected-pool head without the classifier:
    (B, 3, T, H, W) -> (B, head_dim_out). ``blocks`` keeps pytorchvideo's layout and keys."""

    def __init__(self, blocks: nn.ModuleList, num_features: int) -> None:
        super().__init__()
        self.blocks = blocks
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)  # last block: B C T H W -> B C (projected pool, global average)
        return x


def _x3d(
    *,
    num_classes: int,
    width_factor: float,
    depth_factor: float,
    bottleneck_factor: float,
    head_dim_out: int,
    drop_rate: float,
) -> StudentModel:
    x3d = _models("x3d")
    # Built for X3D-XS's own input (4x160x160); the input size only sets the head's pool kernel,
    # which is replaced by an adaptive pool below.
    net = x3d.create_x3d(
        input_clip_length=4,
        input_crop_size=160,
        model_num_class=num_classes,
        dropout_rate=0.0,
        width_factor=width_factor,
        depth_factor=depth_factor,
        bottleneck_factor=bottleneck_factor,
        head_dim_out=head_dim_out,
        head_activation=None,
    )
    head = net.blocks[-1]
    head.pool.pool = nn.AdaptiveAvgPool3d(1)
    head.proj = None  # the student's head takes the classifier's place
    head.dropout = None
    return StudentModel(
        X3dBackbone(net.blocks, head_dim_out),
        num_features=head_dim_out,
        num_classes=num_classes,
        drop_rate=drop_rate,
        checkpoint_ignore=(f"blocks.{len(net.blocks) - 1}.proj.",),
    )


@register_student(
    "x3d_xs",
    family=FAMILY,
    default_size=(4, 160, 160),
    tiny_kwargs={"width_factor": 0.5, "depth_factor": 0.5, "head_dim_out": 32},
    mean=PYTORCHVIDEO_MEAN,
    std=PYTORCHVIDEO_STD,
)
def x3d_xs(
    *,
    num_classes: int,
    width_factor: float = 2.0,
    depth_factor: float = 2.2,
    bottleneck_factor: float = 2.25,
    head_dim_out: int = 2048,
    drop_rate: float = 0.0,
) -> StudentModel:
    """X3D-XS (pytorchvideo): depthwise 3D bottlenecks with squeeze-excitation, 3.0M params."""
    return _x3d(
        num_classes=num_classes,
        width_factor=width_factor,
        depth_factor=depth_factor,
        bottleneck_factor=bottleneck_factor,
        head_dim_out=head_dim_out,
        drop_rate=drop_rate,
    )


# --- SlowFast ---------------------------------------------------------------------------------


class SlowFastBackbone(nn.Module):
    """(B, 3, T, H, W) -> slow pathway on frames ``::alpha`` and fast pathway on all of them ->
    (B, 32 * (slow width + fast width)). ``blocks`` keeps pytorchvideo's layout and keys."""

    def __init__(self, blocks: nn.ModuleList, *, alpha: int, num_features: int) -> None:
        super().__init__()
        self.blocks = blocks
        self.alpha = alpha
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> Any:
        # A fresh list each call: pytorchvideo's multipathway blocks write into it.
        paths: Any = [x[:, :, :: self.alpha], x]  # B 3 ceil(T/alpha) H W, B 3 T H W
        for block in self.blocks:
            paths = block(paths)  # last block: pool each pathway, concatenate -> B C 1 1 1
        return torch.flatten(paths, 1)


@register_student(
    "slowfast_r18",
    family=FAMILY,
    default_size=(32, 224, 224),
    tiny_kwargs={"width": 16},
    mean=PYTORCHVIDEO_MEAN,
    std=PYTORCHVIDEO_STD,
)
def slowfast_r18(
    *, num_classes: int, width: int = 64, alpha: int = 4, drop_rate: float = 0.0
) -> StudentModel:
    """SlowFast with depth-18 stages (pytorchvideo ``create_slowfast(model_depth=18)``), 11M."""
    if width < SLOWFAST_BETA or width % SLOWFAST_BETA:
        raise ValueError(f"width must be a positive multiple of {SLOWFAST_BETA}, got {width}")
    if alpha < 1:
        raise ValueError(f"alpha must be >= 1, got {alpha}")
    slowfast = _models("slowfast")
    fast = width // SLOWFAST_BETA
    net = slowfast.create_slowfast(
        model_depth=18,
        model_num_class=num_classes,
        stem_dim_outs=(width, fast),
        slowfast_channel_reduction_ratio=(SLOWFAST_BETA,),
        slowfast_fusion_conv_stride=(alpha, 1, 1),
        head=None,
        head_pool=nn.AdaptiveAvgPool3d,
        head_output_size=((1, 1, 1), (1, 1, 1)),
    )
    num_features = 32 * (width + fast)  # four stages: 4x then three doublings of the stem width
    return StudentModel(
        SlowFastBackbone(net.blocks, alpha=alpha, num_features=num_features),
        num_features=num_features,
        num_classes=num_classes,
        drop_rate=drop_rate,
    )
