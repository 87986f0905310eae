"""MoViNet (Kondratyuk et al., CVPR 2021, "MoViNets: Mobile Video Networks"): base and stream.

A clean-room PyTorch implementation of MoViNet-A0/A1/A2 from the architecture of the TensorFlow
Model Garden (``official/projects/movinet``), in its two published forms:

* base (``movinet_a0`` ...): non-causal 3D convolutions, squeeze-excitation over the whole clip;
* stream (``movinet_a0_stream`` ...): causal convolutions (time padded only with past frames),
  (2+1)D kernels, causal squeeze-excitation fed by a cumulative mean over time concatenated with
  the per-frame mean ("2plus3d"), hard-swish / hard-sigmoid, and stream buffers, so a clip can be
  classified in one pass or frame by frame (:meth:`MoViNet.forward_stream`) with the same logits.

``movinet_micro`` is a CPU-sized member of the family (same block types, fewer and narrower
layers) for 16x32x32 clips, used by tests and small victims. The blocks live in
:mod:`victim_server.models.movinet_layers`; converting Model Garden checkpoints in
:mod:`victim_server.models.movinet_convert`. ``bench/movinet_equivalence.py`` builds the
reference in TensorFlow with random weights, converts its checkpoint and compares logits.

Architecture
------------
``conv1`` (stem: 1x3x3 conv, spatial stride 2, BN, activation) -> ``blocks`` (inverted bottlenecks,
see below) -> ``conv7`` (1x1x1 conv to ``project_filters``, BN, activation) -> global average pool
over T, H, W = :meth:`MoViNet.forward_features` -> ``classifier`` (1x1x1 conv to ``head_filters``
with bias, Swish, dropout, 1x1x1 conv to classes with bias) = :meth:`MoViNet.forward_head`.

Each block ``b{i}_l{j}`` (stage i, layer j) is::

    expand  1x1x1 conv -> BN -> activation                 (in -> expand_filters)
    deep    depthwise k_t x k_h x k_w conv, stride (1, s, s) -> BN -> activation
            (stream: 1 x k_h x k_w -> BN -> act, then causal k_t x 1 x 1 -> BN -> act)
    se      squeeze-excitation: pool -> 1x1x1 conv (bias) -> activation
            -> 1x1x1 conv (bias) -> gating, times the input
            (hidden width = pooled channels / 4 rounded to a multiple of 8)
    project 1x1x1 conv -> BN                                (no activation)
    out = res(x) + alpha * project(...)

``res`` is the identity when the shape is kept, else [3x3 spatial average pool with stride s (only
when strided; padding not counted)] + 1x1x1 conv + BN. ``alpha`` is the learnable scalar residual
scale of the reference model (ReZero, initialised at 0 as there). The activation is Swish (base) or
hard-swish (stream); the gating sigmoid or hard-sigmoid; the classifier's activation is Swish in
both, as in the reference's classifier head.

All convolutions have no bias except those of ``se`` and ``classifier``. BatchNorm uses eps=1e-3 and
momentum 0.01 (TensorFlow's 0.99 decay). Time is never downsampled.

State-dict key layout
---------------------
Submodules of the base models are named after the widely used MIT-licensed PyTorch conversion of
the TF Kinetics-600 checkpoints (Atze00/MoViNet-pytorch, ``causal=False``, ``conv_type="3d"``), so
its converted base-model state dicts for A0/A1/A2 load with ``strict=True``. Every conv sits in a
``ConvBlock`` whose ``conv_1`` holds ``conv3d`` / ``norm`` / ``act``::

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
every channel change coincides with a spatial stride, so their skips are all ``res.1``. The stream
models differ in two places: a deep conv with k_t > 1 has its spatial kernel in ``conv_1``
(E, 1, 1, k_h, k_w) and its temporal kernel in ``conv_2`` (E, 1, k_t, 1, 1), each with a norm; and
``se.fc1`` reads 2E channels (cumulative mean and per-frame mean), so S = 2E / 4 rounded.

Padding
-------
Kernels are odd, and stride-1 convolutions pad symmetrically (k // 2), which is exactly TF's
``'same'``. Strided layers (the stem, the first depthwise conv of a stage, the skip pool) differ:
TF's ``'same'`` pads ``max(k - s, 0)`` in total for even sizes and puts the extra pixel at the
bottom/right, where a symmetric pad puts one on each side. Both give ``ceil(n / s)`` outputs, so
shapes and keys agree; only the sampling grid shifts by a pixel. ``padding="tf_same"`` reproduces
TF numerics (computed from the input size at run time) and is the default for A0-A2, whose weights
come from TF; ``padding="symmetric"`` uses PyTorch's built-in padding and is the default for
``movinet_micro``. Causal models pad time with the k_t - 1 previous frames only.

Parameter counts
----------------
With 600 classes: A0 3.11M, A1 4.69M, A2 5.25M, exactly what the reference builds (see
``bench/results/movinet_equivalence.json``). The paper's table gives A2 4.8M; the reference code,
whose published checkpoints these weights come from, has 5.25M, so the paper's figure is not the
A2 that the code and checkpoints define. Most of every count is the classifier (P x 2048 + 2048 x
600 weights: 2.2M of A0's 3.1M).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from victim_server.models.config import UNIT_MEAN, UNIT_STD, InputSpec
from victim_server.models.movinet_layers import (
    ACTIVATIONS,
    CONV_TYPES,
    PADDING_MODES,
    SE_TYPES,
    ConvBlock,
    ConvType,
    MoViNetBlock,
    PaddingMode,
    SEType,
    SkipPool,
    SqueezeExcitation,
    StreamState,
    Triple,
    assign_state_keys,
    check_kernel,
    make_activation,
)
from victim_server.models.registry import register_model

__all__ = [
    "MOVINET_SPECS",
    "STREAM_OPTIONS",
    "ConvBlock",
    "HeadSpec",
    "LayerSpec",
    "MoViNet",
    "MoViNetBlock",
    "MoViNetSpec",
    "PaddingMode",
    "SkipPool",
    "SqueezeExcitation",
    "StageSpec",
    "StemSpec",
    "StreamState",
]

SE_RATIO = 0.25

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

# The published stream checkpoints (Model Garden README, "streaming" example).
STREAM_OPTIONS: dict[str, Any] = {
    "causal": True,
    "conv_type": "2plus1d",
    "se_type": "2plus3d",
    "activation": "hard_swish",
    "gating_activation": "hard_sigmoid",
}

# --------------------------------------------------------------------------------------------
# Config table
# --------------------------------------------------------------------------------------------


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
                check_kernel(layer.kernel_size)
                if layer.stride[0] != 1 or layer.stride[1] != layer.stride[2]:
                    raise ValueError(f"MoViNet layers stride (1, s, s) only, got {layer.stride}")
        check_kernel(self.stem.kernel_size)


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


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


class MoViNet(nn.Module):
    """MoViNet built from a :class:`MoViNetSpec`, base or causal (stream).

    Input: float clips (B, 3, T, H, W). ``forward_features`` gives the pooled ``conv7`` output
    (B, num_features); ``forward_head`` maps it to logits (B, num_classes). A causal model also
    takes a clip in chunks: ``logits, state = model.forward_stream(chunk, state)``, starting from
    ``state=None``; after the last chunk the logits equal ``model(clip)``.
    """

    def __init__(
        self,
        spec: MoViNetSpec,
        *,
        num_classes: int,
        dropout: float = 0.2,
        padding: PaddingMode = "symmetric",
        in_channels: int = 3,
        causal: bool = False,
        conv_type: ConvType = "3d",
        se_type: SEType = "3d",
        activation: str = "swish",
        gating_activation: str = "sigmoid",
        head_activation: str = "swish",
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        _choice("padding", padding, PADDING_MODES)
        _choice("conv_type", conv_type, CONV_TYPES)
        _choice("se_type", se_type, SE_TYPES)
        for name, value in (
            ("activation", activation),
            ("gating_activation", gating_activation),
            ("head_activation", head_activation),
        ):
            _choice(name, value, ACTIVATIONS)
        self.spec = spec
        self.padding = padding
        self.causal = causal
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.num_features = spec.head.project_filters
        self.head_filters = spec.head.head_filters

        self.conv1 = ConvBlock(
            in_channels,
            spec.stem.filters,
            kernel_size=spec.stem.kernel_size,
            stride=spec.stem.stride,
            activation=activation,
            padding=padding,
            causal=causal,
            conv_type=conv_type,
        )
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        channels = spec.stem.filters
        for i, stage in enumerate(spec.stages):
            for j, layer in enumerate(stage.layers):
                blocks[f"b{i}_l{j}"] = MoViNetBlock(
                    channels,
                    stage.base_filters,
                    expand_filters=layer.expand_filters,
                    kernel_size=layer.kernel_size,
                    stride=layer.stride,
                    padding=padding,
                    causal=causal,
                    conv_type=conv_type,
                    se_type=se_type,
                    activation=activation,
                    gating_activation=gating_activation,
                    se_ratio=SE_RATIO,
                )
                channels = stage.base_filters
        self.blocks = nn.Sequential(blocks)
        self.conv7 = ConvBlock(channels, self.num_features, activation=activation)
        self.classifier = nn.Sequential(
            ConvBlock(
                self.num_features,
                self.head_filters,
                norm=False,
                bias=True,
            ),
            make_activation(head_activation),
            nn.Dropout(p=dropout),
            self._new_logits_layer(num_classes),
        )
        self.apply(_init_weights)
        self._init_logits(self.classifier[3])
        assign_state_keys(self)

    def _new_logits_layer(self, num_classes: int) -> ConvBlock:
        return ConvBlock(self.head_filters, num_classes, norm=False, bias=True)

    @staticmethod
    def _init_logits(block: nn.Module) -> None:
        assert isinstance(block, ConvBlock)
        nn.init.normal_(block.conv.weight, std=0.01)
        if block.conv.bias is not None:
            nn.init.zeros_(block.conv.bias)

    def _trunk(self, x: torch.Tensor, state: StreamState | None) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"MoViNet expects (B, {self.in_channels}, T, H, W) clips, got {tuple(x.shape)}"
            )
        x = self.conv1(x, state)  # B C T H/2 W/2
        for block in self.blocks:
            x = block(x, state)
        out: torch.Tensor = self.conv7(x)  # B num_features T H' W'
        return out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._trunk(x, None).mean(dim=(2, 3, 4))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        x = features[:, :, None, None, None]  # B C 1 1 1
        return torch.flatten(self.classifier(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_stream(
        self, x: torch.Tensor, state: StreamState | None = None
    ) -> tuple[torch.Tensor, StreamState]:
        """Logits for the video so far after the chunk ``x`` (B, 3, t, H, W), and the new state.

        ``state=None`` starts a video. The state holds each causal conv's last k_t - 1 input
        frames, each cumulative pool's running sum and count, and the head's running mean; its
        size does not grow with the video. The input is never modified, nor is ``state``.
        """
        if not self.causal:
            raise ValueError("forward_stream needs a causal MoViNet (e.g. movinet_a0_stream)")
        new_state: StreamState = dict(state) if state is not None else {}
        frames = self._trunk(x, new_state).mean(dim=(3, 4))  # B C t
        total = frames.sum(dim=2)
        seen = 0
        if "head.pool_sum" in new_state:
            total = total + new_state["head.pool_sum"]
            seen = int(new_state["head.pool_count"])
        seen += frames.shape[2]
        new_state["head.pool_sum"] = total
        new_state["head.pool_count"] = torch.tensor(seen)
        return self.forward_head(total / seen), new_state

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
    **options: Any,
) -> MoViNet:
    return MoViNet(
        MOVINET_SPECS[variant],
        num_classes=num_classes,
        dropout=dropout,
        padding=padding,
        **options,
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
    """MoViNet-A1 base (4.7M parameters), Kinetics-600 layout, 172x172 clips."""
    return _movinet("a1", num_classes=num_classes, **kwargs)


@register_model(
    "movinet_a2",
    family="movinet",
    default_input=KINETICS600_224,
    default_num_classes=600,
    test_input=_TEST_INPUT,
)
def movinet_a2(*, num_classes: int = 600, **kwargs: Any) -> MoViNet:
    """MoViNet-A2 base (5.25M parameters as built by the reference), Kinetics-600, 224x224."""
    return _movinet("a2", num_classes=num_classes, **kwargs)


@register_model(
    "movinet_a0_stream",
    family="movinet",
    default_input=KINETICS600_172,
    default_num_classes=600,
    test_input=_TEST_INPUT,
)
def movinet_a0_stream(*, num_classes: int = 600, **kwargs: Any) -> MoViNet:
    """MoViNet-A0 stream: causal (2+1)D, frame-by-frame capable, Kinetics-600, 172x172 clips."""
    return _movinet("a0", num_classes=num_classes, **{**STREAM_OPTIONS, **kwargs})


@register_model(
    "movinet_a1_stream",
    family="movinet",
    default_input=KINETICS600_172,
    default_num_classes=600,
    test_input=_TEST_INPUT,
)
def movinet_a1_stream(*, num_classes: int = 600, **kwargs: Any) -> MoViNet:
    """MoViNet-A1 stream: causal (2+1)D, frame-by-frame capable, Kinetics-600, 172x172 clips."""
    return _movinet("a1", num_classes=num_classes, **{**STREAM_OPTIONS, **kwargs})


@register_model(
    "movinet_a2_stream",
    family="movinet",
    default_input=KINETICS600_224,
    default_num_classes=600,
    test_input=_TEST_INPUT,
)
def movinet_a2_stream(*, num_classes: int = 600, **kwargs: Any) -> MoViNet:
    """MoViNet-A2 stream: causal (2+1)D, frame-by-frame capable, Kinetics-600, 224x224 clips."""
    return _movinet("a2", num_classes=num_classes, **{**STREAM_OPTIONS, **kwargs})


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
