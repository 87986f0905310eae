"""MoViNet (Kondratyuk et al., CVPR 2021, "MoViNets: Mobile Video Networks"), base mode.

A clean-room PyTorch implementation of the non-causal ("base") MoViNet-A0/A1/A2 from the published
architecture (block table, stem, head, squeeze-excitation) of the TensorFlow Model Garden
(``official/projects/movinet``). There are no stream buffers and no causal convolutions: a clip goes
through in one pass. ``movinet_micro`` is a CPU-sized member of the same family (same block types,
fewer and narrower layers) for 16x32x32 clips, used by tests and small victims.

Architecture
------------
``conv1`` (stem: 1x3x3 conv, spatial stride 2, BN, Swish) -> ``blocks`` (inverted bottlenecks, see
below) -> ``conv7`` (1x1x1 conv to ``project_filters``, BN, Swish) -> global average pool over
T, H, W = :meth:`MoViNet.forward_features` -> ``classifier`` (1x1x1 conv to ``head_filters`` with
bias, Swish, dropout, 1x1x1 conv to classes with bias) = :meth:`MoViNet.forward_head`.

Each block ``b{i}_l{j}`` (stage i, layer j) is::

    expand  1x1x1 conv -> BN -> Swish                    (in -> expand_filters)
    deep    depthwise k_t x k_h x k_w conv, stride (1, s, s) -> BN -> Swish
    se      squeeze-excitation: mean over T,H,W -> 1x1x1 conv (bias) -> Swish
            -> 1x1x1 conv (bias) -> sigmoid, times the input
            (hidden width = expand_filters / 4 rounded to a multiple of 8)
    project 1x1x1 conv -> BN                              (no activation)
    out = res(x) + alpha * project(...)

``res`` is the identity when the shape is kept, else [3x3 spatial average pool with stride s (only
when strided; padding not counted)] + 1x1x1 conv + BN. ``alpha`` is the learnable scalar residual
scale of the reference model (ReZero, initialised at 0 as there); it is kept so that converted
checkpoints, which carry a trained value per block, load strictly.

All convolutions have no bias except those of ``se`` and ``classifier``. BatchNorm uses eps=1e-3 and
momentum 0.01 (TensorFlow's 0.99 decay). Time is never downsampled.

State-dict key layout
---------------------
Submodules are named after the widely used MIT-licensed PyTorch conversion of the TF Kinetics-600
checkpoints (Atze00/MoViNet-pytorch, ``causal=False``, ``conv_type="3d"``), so its converted
base-model state dicts for A0/A1/A2 load with ``strict=True``. Every conv sits in a ``ConvBlock``
whose ``conv_1`` holds ``conv3d`` / ``norm`` / ``act``::

    conv1.conv_1.conv3d.weight                      stem conv (F, 3, 1, 3, 3)
    conv1.conv_1.norm.{weight,bias,running_mean,running_var,num_batches_tracked}
    blocks.b{i}_l{j}.expand.conv_1.conv3d.weight    (E, C_in, 1, 1, 1)  + .norm.*
    blocks.b{i}_l{j}.deep.conv_1.conv3d.weight      (E, 1, k_t, k_h, k_w) + .norm.*
    blocks.b{i}_l{j}.se.fc1.conv_1.conv3d.{weight,bias}   (S, E, 1, 1, 1)
    blocks.b{i}_l{j}.se.fc2.conv_1.conv3d.{weight,bias}   (E, S, 1, 1, 1)
    blocks.b{i}_l{j}.project.conv_1.conv3d.weight   (C_out, E, 1, 1, 1) + .norm.*
    blocks.b{i}_l{j}.res.1.conv_1.conv3d.weight     skip conv after the pool (strided layers)
    blocks.b{i}_l{j}.res.0.conv_1.conv3d.weight     skip conv with no pool (channels change only)
    blocks.b{i}_l{j}.alpha                          residual scale, shape ()
    conv7.conv_1.conv3d.weight                      (P, C_last, 1, 1, 1) + .norm.*
    classifier.0.conv_1.conv3d.{weight,bias}        (H, P, 1, 1, 1)   H = head_filters (2048)
    classifier.3.conv_1.conv3d.{weight,bias}        (classes, H, 1, 1, 1)

(``classifier.1`` is the Swish and ``classifier.2`` the dropout; neither has state.) In A0/A1/A2
every channel change coincides with a spatial stride, so their skips are all ``res.1``.

Padding
-------
Kernels are odd, and stride-1 convolutions pad symmetrically (k // 2), which is exactly TF's
``'same'``. Strided layers (the stem, the first depthwise conv of a stage, the skip pool) differ:
TF's ``'same'`` pads ``max(k - s, 0)`` in total for even sizes and puts the extra pixel at the
bottom/right, where a symmetric pad puts one on each side. Both give ``ceil(n / s)`` outputs, so
shapes and keys agree; only the sampling grid shifts by a pixel. ``padding="tf_same"`` reproduces
TF numerics (computed from the input size at run time) and is the default for A0-A2, whose weights
come from TF; ``padding="symmetric"`` uses PyTorch's built-in padding and is the default for
``movinet_micro``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from victim_server.models.config import UNIT_MEAN, UNIT_STD, InputSpec
from victim_server.models.registry import register_model

Triple = tuple[int, int, int]
PaddingMode = Literal["symmetric", "tf_same"]
PADDING_MODES: tuple[str, ...] = ("symmetric", "tf_same")

BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # PyTorch convention; TensorFlow's decay 0.99
SE_RATIO = 0.25
SKIP_POOL: Triple = (1, 3, 3)

# Kernel and stride shorthands of the published block table: K(t, s) is a (t, s, s) kernel.
K13: Triple = (1, 3, 3)
K15: Triple = (1, 5, 5)
K33: Triple = (3, 3, 3)
K53: Triple = (5, 3, 3)
S11: Triple = (1, 1, 1)
S12: Triple = (1, 2, 2)

KINETICS600_172 = InputSpec(frames=50, height=172, width=172, mean=UNIT_MEAN, std=UNIT_STD)
KINETICS600_224 = InputSpec(frames=50, height=224, width=224, mean=UNIT_MEAN, std=UNIT_STD)
MICRO_INPUT = InputSpec(
    frames=16, height=32, width=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)
)


# --------------------------------------------------------------------------------------------
# Config table
# --------------------------------------------------------------------------------------------


def _check_kernel(kernel_size: Triple) -> None:
    if any(k % 2 == 0 or k < 1 for k in kernel_size):
        raise ValueError(f"MoViNet kernels must be odd, got {kernel_size}")


@dataclass(frozen=True)
class StemSpec:
    filters: int
    kernel_size: Triple
    stride: Triple


@dataclass(frozen=True)
class LayerSpec:
    """One bottleneck: expansion width, depthwise kernel and stride."""

    expand_filters: int
    kernel_size: Triple
    stride: Triple


@dataclass(frozen=True)
class StageSpec:
    """Layers sharing one output width (``base_filters``)."""

    base_filters: int
    layers: tuple[LayerSpec, ...]


@dataclass(frozen=True)
class HeadSpec:
    project_filters: int  # conv7 width = num_features
    head_filters: int  # hidden width of the classifier


@dataclass(frozen=True)
class MoViNetSpec:
    stem: StemSpec
    stages: tuple[StageSpec, ...]
    head: HeadSpec

    def __post_init__(self) -> None:
        for stage in self.stages:
            for layer in stage.layers:
                _check_kernel(layer.kernel_size)
                if layer.stride[0] != 1 or layer.stride[1] != layer.stride[2]:
                    raise ValueError(f"MoViNet layers stride (1, s, s) only, got {layer.stride}")
        _check_kernel(self.stem.kernel_size)


def _stage(
    base_filters: int,
    expand_filters: tuple[int, ...],
    kernel_sizes: tuple[Triple, ...],
    strides: tuple[Triple, ...],
) -> StageSpec:
    if not len(expand_filters) == len(kernel_sizes) == len(strides):
        raise ValueError("a stage needs as many kernels and strides as expansion widths")
    layers = tuple(
        LayerSpec(expand_filters=e, kernel_size=k, stride=s)
        for e, k, s in zip(expand_filters, kernel_sizes, strides, strict=True)
    )
    return StageSpec(base_filters=base_filters, layers=layers)


MOVINET_SPECS: dict[str, MoViNetSpec] = {
    "a0": MoViNetSpec(
        stem=StemSpec(filters=8, kernel_size=K13, stride=S12),
        stages=(
            _stage(8, (24,), (K15,), (S12,)),
            _stage(32, (80, 80, 80), (K33, K33, K33), (S12, S11, S11)),
            _stage(56, (184, 112, 184), (K53, K33, K33), (S12, S11, S11)),
            _stage(56, (184, 184, 184, 184), (K53, K33, K33, K33), (S11,) * 4),
            _stage(104, (384, 280, 280, 344), (K53, K15, K15, K15), (S12, S11, S11, S11)),
        ),
        head=HeadSpec(project_filters=480, head_filters=2048),
    ),
    "a1": MoViNetSpec(
        stem=StemSpec(filters=16, kernel_size=K13, stride=S12),
        stages=(
            _stage(16, (40, 40), (K15, K33), (S12, S11)),
            _stage(40, (96, 120, 96, 96), (K33,) * 4, (S12, S11, S11, S11)),
            _stage(64, (216, 128, 216, 168, 216), (K53, K33, K33, K33, K33), (S12,) + (S11,) * 4),
            _stage(64, (216, 216, 216, 128, 128, 216), (K53, K33, K33, K33, K15, K33), (S11,) * 6),
            _stage(
                136,
                (456, 360, 360, 360, 456, 456, 544),
                (K53, K15, K15, K15, K15, K33, K13),
                (S12,) + (S11,) * 6,
            ),
        ),
        head=HeadSpec(project_filters=600, head_filters=2048),
    ),
    "a2": MoViNetSpec(
        stem=StemSpec(filters=16, kernel_size=K13, stride=S12),
        stages=(
            _stage(16, (40, 40, 64), (K15, K33, K33), (S12, S11, S11)),
            _stage(40, (96, 120, 96, 96, 120), (K33,) * 5, (S12,) + (S11,) * 4),
            _stage(72, (240, 160, 240, 192, 240), (K53, K33, K33, K33, K33), (S12,) + (S11,) * 4),
            _stage(72, (240, 240, 240, 240, 144, 240), (K53, K33, K33, K33, K15, K33), (S11,) * 6),
            _stage(
                144,
                (480, 384, 384, 480, 480, 480, 576),
                (K53, K15, K15, K15, K15, K33, K13),
                (S12,) + (S11,) * 6,
            ),
        ),
        head=HeadSpec(project_filters=640, head_filters=2048),
    ),
    # CPU-sized: 16x32x32 in, 2x2 spatial at the last stage. Same block types as A0, including
    # both skip kinds (pool + conv when strided, conv only when just the width changes).
    "micro": MoViNetSpec(
        stem=StemSpec(filters=8, kernel_size=K13, stride=S12),
        stages=(
            _stage(8, (24,), (K15,), (S12,)),
            _stage(16, (48, 48), (K33, K33), (S12, S11)),
            _stage(32, (96, 96), (K53, K33), (S12, S11)),
            _stage(48, (144,), (K33,), (S11,)),
        ),
        head=HeadSpec(project_filters=128, head_filters=256),
    ),
}


def _round_channels(value: float, divisor: int = 8) -> int:
    """Nearest multiple of ``divisor`` (at least ``divisor``), never more than 10% below value."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'same' padding (before, after) for one dimension: the extra pixel goes after."""
    total = max(kernel - (stride if size % stride == 0 else size % stride), 0)
    return total // 2, total - total // 2


def _spatial_same_pads(
    x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int]
) -> tuple[int, int, int, int]:
    top, bottom = _same_pad(x.shape[-2], kernel[0], stride[0])
    left, right = _same_pad(x.shape[-1], kernel[1], stride[1])
    return (left, right, top, bottom)  # F.pad order: last dim first


def _check_padding(padding: str) -> PaddingMode:
    if padding == "symmetric":
        return "symmetric"
    if padding == "tf_same":
        return "tf_same"
    raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}")


# --------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------

ActivationFactory = Callable[[], nn.Module]


class ConvBlock(nn.Module):
    """Conv3d -> BatchNorm3d or nothing -> activation or nothing, as ``conv_1.{conv3d,norm,act}``.

    Stride-1 convs pad k // 2 on every side. A spatially strided conv in ``tf_same`` mode pads H
    and W from the input size at run time, as TensorFlow's ``'same'`` does.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: Triple = (1, 1, 1),
        stride: Triple = (1, 1, 1),
        groups: int = 1,
        norm: bool = True,
        activation: ActivationFactory | None = None,
        bias: bool = False,
        padding: PaddingMode = "symmetric",
    ) -> None:
        super().__init__()
        _check_kernel(kernel_size)
        self.kernel_size = kernel_size
        self.stride = stride
        self.tf_pad = padding == "tf_same" and stride[1:] != (1, 1)
        kt, kh, kw = kernel_size
        conv_padding = (kt // 2, 0, 0) if self.tf_pad else (kt // 2, kh // 2, kw // 2)
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            conv3d=nn.Conv3d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=conv_padding,
                groups=groups,
                bias=bias,
            ),
            norm=(
                nn.BatchNorm3d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
                if norm
                else nn.Identity()
            ),
            act=activation() if activation is not None else nn.Identity(),
        )
        self.conv_1 = nn.Sequential(layers)

    @property
    def conv(self) -> nn.Conv3d:
        conv = self.conv_1.conv3d
        assert isinstance(conv, nn.Conv3d)
        return conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tf_pad:
            pads = _spatial_same_pads(x, self.kernel_size[1:], self.stride[1:])
            x = F.pad(x, pads)
        out: torch.Tensor = self.conv_1(x)
        return out


class SkipPool(nn.Module):
    """1x3x3 average pool with spatial stride for the residual path; padding is never counted."""

    def __init__(self, stride: Triple, *, padding: PaddingMode = "symmetric") -> None:
        super().__init__()
        self.stride = stride
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == "symmetric":
            pads = (1, 1, 1, 1)
        else:
            pads = _spatial_same_pads(x, SKIP_POOL[1:], self.stride[1:])
        # Explicit padding and a count of the real pixels under each window: this excludes the
        # padding from the mean, like TF's pool, and also works on maps smaller than the window.
        sums = F.avg_pool3d(F.pad(x, pads), SKIP_POOL, stride=self.stride, divisor_override=1)
        ones = F.pad(x.new_ones((1, 1, 1, *x.shape[-2:])), pads)
        counts = F.avg_pool3d(ones, SKIP_POOL, stride=self.stride, divisor_override=1)
        return sums / counts

    def extra_repr(self) -> str:
        return f"kernel_size={SKIP_POOL}, stride={self.stride}, padding={self.padding!r}"


class SqueezeExcitation(nn.Module):
    """Base-mode SE: pool over T, H, W; reduce (Swish); expand (sigmoid); rescale channels."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = ConvBlock(channels, hidden, norm=False, activation=nn.SiLU, bias=True)
        self.fc2 = ConvBlock(hidden, channels, norm=False, activation=nn.Sigmoid, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean(dim=(2, 3, 4), keepdim=True)  # B C 1 1 1
        return x * self.fc2(self.fc1(scale))


class MoViNetBlock(nn.Module):
    """Inverted bottleneck: expand, depthwise 3D conv, SE, project, scaled residual add."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        layer: LayerSpec,
        *,
        padding: PaddingMode = "symmetric",
        se_ratio: float = SE_RATIO,
    ) -> None:
        super().__init__()
        width = layer.expand_filters
        self.expand = ConvBlock(in_channels, width, activation=nn.SiLU)
        self.deep = ConvBlock(
            width,
            width,
            kernel_size=layer.kernel_size,
            stride=layer.stride,
            groups=width,
            activation=nn.SiLU,
            padding=padding,
        )
        self.se = SqueezeExcitation(width, _round_channels(se_ratio * width))
        self.project = ConvBlock(width, out_channels)
        self.res: nn.Sequential | None = None
        strided = layer.stride != (1, 1, 1)
        if strided or in_channels != out_channels:
            skip: list[nn.Module] = [SkipPool(layer.stride, padding=padding)] if strided else []
            skip.append(ConvBlock(in_channels, out_channels))
            self.res = nn.Sequential(*skip)
        self.alpha = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.res is None else self.res(x)
        out = self.project(self.se(self.deep(self.expand(x))))
        return shortcut + self.alpha * out


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


class MoViNet(nn.Module):
    """Base (non-causal) MoViNet built from a :class:`MoViNetSpec`.

    Input: float clips (B, 3, T, H, W). ``forward_features`` gives the pooled ``conv7`` output
    (B, num_features); ``forward_head`` maps it to logits (B, num_classes).
    """

    def __init__(
        self,
        spec: MoViNetSpec,
        *,
        num_classes: int,
        dropout: float = 0.2,
        padding: PaddingMode = "symmetric",
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        padding = _check_padding(padding)
        self.spec = spec
        self.padding = padding
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.num_features = spec.head.project_filters
        self.head_filters = spec.head.head_filters

        self.conv1 = ConvBlock(
            in_channels,
            spec.stem.filters,
            kernel_size=spec.stem.kernel_size,
            stride=spec.stem.stride,
            activation=nn.SiLU,
            padding=padding,
        )
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        channels = spec.stem.filters
        for i, stage in enumerate(spec.stages):
            for j, layer in enumerate(stage.layers):
                blocks[f"b{i}_l{j}"] = MoViNetBlock(
                    channels, stage.base_filters, layer, padding=padding
                )
                channels = stage.base_filters
        self.blocks = nn.Sequential(blocks)
        self.conv7 = ConvBlock(channels, self.num_features, activation=nn.SiLU)
        self.classifier = nn.Sequential(
            ConvBlock(self.num_features, self.head_filters, norm=False, bias=True),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            self._new_logits_layer(num_classes),
        )
        self.apply(_init_weights)
        self._init_logits(self.classifier[3])

    def _new_logits_layer(self, num_classes: int) -> ConvBlock:
        return ConvBlock(self.head_filters, num_classes, norm=False, bias=True)

    @staticmethod
    def _init_logits(block: nn.Module) -> None:
        assert isinstance(block, ConvBlock)
        nn.init.normal_(block.conv.weight, std=0.01)
        if block.conv.bias is not None:
            nn.init.zeros_(block.conv.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"MoViNet expects (B, {self.in_channels}, T, H, W) clips, got {tuple(x.shape)}"
            )
        x = self.conv1(x)  # B C T H/2 W/2
        x = self.blocks(x)
        x = self.conv7(x)  # B num_features T H' W'
        return x.mean(dim=(2, 3, 4))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        x = features[:, :, None, None, None]  # B C 1 1 1
        return torch.flatten(self.classifier(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the last 1x1x1 conv (``classifier.3``) with a fresh one for ``num_classes``."""
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        layer = self._new_logits_layer(num_classes)
        self._init_logits(layer)
        reference = self.conv7.conv.weight
        self.classifier[3] = layer.to(device=reference.device, dtype=reference.dtype)
        self.num_classes = num_classes


def _init_weights(module: nn.Module) -> None:
    # The reference uses He-normal kernels (fan in), zero biases, unit BatchNorm scales.
    if isinstance(module, nn.Conv3d):
        nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm3d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------


def _movinet(
    variant: str,
    *,
    num_classes: int,
    dropout: float = 0.2,
    padding: PaddingMode = "tf_same",
) -> MoViNet:
    return MoViNet(
        MOVINET_SPECS[variant], num_classes=num_classes, dropout=dropout, padding=padding
    )


_TEST_INPUT = InputSpec(frames=4, height=32, width=32, mean=UNIT_MEAN, std=UNIT_STD)


@register_model(
    "movinet_a0",
    family="movinet",
    default_input=KINETICS600_172,
    default_num_classes=600,
    test_input=_TEST_INPUT,
)
def movinet_a0(*, num_classes: int = 600, **kwargs: Any) -> MoViNet:
    """MoViNet-A0 base (3.1M parameters), Kinetics-600 layout, 172x172 clips."""
    return _movinet("a0", num_classes=num_classes, **kwargs)


@register_model(
    "movinet_a1",
    family="movinet",
    default_input=KINETICS600_172,
    default_num_classes=600,
    test_input=_TEST_INPUT,
)
def movinet_a1(*, num_classes: int = 600, **kwargs: Any) -> MoViNet:
    """MoViNet-A1 base (4.6M parameters), Kinetics-600 layout, 172x172 clips."""
    return _movinet("a1", num_classes=num_classes, **kwargs)


@register_model(
    "movinet_a2",
    family="movinet",
    default_input=KINETICS600_224,
    default_num_classes=600,
    test_input=_TEST_INPUT,
)
def movinet_a2(*, num_classes: int = 600, **kwargs: Any) -> MoViNet:
    """MoViNet-A2 base (4.8M parameters), Kinetics-600 layout, 224x224 clips."""
    return _movinet("a2", num_classes=num_classes, **kwargs)


@register_model(
    "movinet_micro",
    family="movinet",
    default_input=MICRO_INPUT,
    default_num_classes=16,
    test_input=InputSpec(frames=8, height=32, width=32, mean=MICRO_INPUT.mean, std=MICRO_INPUT.std),
)
def movinet_micro(*, num_classes: int = 16, **kwargs: Any) -> MoViNet:
    """CPU-sized MoViNet for 16x32x32 clips: four narrow stages, symmetric padding."""
    return _movinet("micro", num_classes=num_classes, **{"padding": "symmetric", **kwargs})
