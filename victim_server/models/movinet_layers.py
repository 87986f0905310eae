"""MoViNet building blocks: convolutions, skip pool, squeeze-excitation, bottleneck, stream state.

Every block works in two modes, chosen per model (see :mod:`victim_server.models.movinet`):

* base: convolutions pad time symmetrically (k_t // 2 each side) and squeeze-excitation pools over
  the whole clip, so each output frame sees the future;
* causal: convolutions pad only the past (k_t - 1 frames before, none after) and squeeze-excitation
  pools cumulatively (frame t averages frames 0..t), so no output depends on a later frame.

Causal blocks keep *stream state* in a plain ``dict[str, Tensor]`` (:data:`StreamState`), keyed by
the module's name in the model: a temporal conv stores its last k_t - 1 input frames
(``"<name>"``), a cumulative pool its running sum and frame count (``"<name>.pool_sum"``,
``"<name>.pool_count"``). Missing entries mean "start of the video": zeros and a count of 0, which
is exactly the causal padding of a one-pass run, so a clip fed frame by frame gives the same
outputs as the clip fed at once.

Convolutions are ``"3d"`` (one k_t x k_h x k_w kernel) or ``"2plus1d"`` (a 1 x k_h x k_w spatial
conv, BN, activation, then a k_t x 1 x 1 temporal conv with its own BN and activation, as in the
published stream checkpoints). The temporal conv sits in ``conv_2`` of the :class:`ConvBlock`,
with the same ``conv3d`` / ``norm`` / ``act`` layout as ``conv_1``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Triple = tuple[int, int, int]
PaddingMode = Literal["symmetric", "tf_same"]
ConvType = Literal["3d", "2plus1d"]
SEType = Literal["3d", "2plus3d"]
ActivationName = Literal["swish", "hard_swish", "sigmoid", "hard_sigmoid"]
StreamState = dict[str, torch.Tensor]

PADDING_MODES: tuple[str, ...] = ("symmetric", "tf_same")
CONV_TYPES: tuple[str, ...] = ("3d", "2plus1d")
SE_TYPES: tuple[str, ...] = ("3d", "2plus3d")
ACTIVATIONS: tuple[str, ...] = ("swish", "hard_swish", "sigmoid", "hard_sigmoid")

BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # PyTorch convention; TensorFlow's decay 0.99
SKIP_POOL: Triple = (1, 3, 3)


def check_kernel(kernel_size: Triple) -> None:
    if any(k % 2 == 0 or k < 1 for k in kernel_size):
        raise ValueError(f"MoViNet kernels must be odd, got {kernel_size}")


def round_channels(value: float, divisor: int = 8) -> int:
    """Nearest multiple of ``divisor`` (at least ``divisor``), never more than 10% below value."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'same' padding (before, after) for one dimension: the extra pixel goes after."""
    total = max(kernel - (stride if size % stride == 0 else size % stride), 0)
    return total // 2, total - total // 2


def spatial_same_pads(
    x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int]
) -> tuple[int, int, int, int]:
    top, bottom = _same_pad(x.shape[-2], kernel[0], stride[0])
    left, right = _same_pad(x.shape[-1], kernel[1], stride[1])
    return (left, right, top, bottom)  # F.pad order: last dim first


class TFHardSigmoid(nn.Module):
    """relu6(x + 3) * 0.16667: the Model Garden's hard sigmoid (its constant, not exactly 1/6)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x + 3.0) * 0.16667


def make_activation(name: str) -> nn.Module:
    if name == "swish":
        return nn.SiLU()
    if name == "hard_swish":
        return nn.Hardswish()  # x * relu6(x + 3) / 6, as the Model Garden's hard_swish
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "hard_sigmoid":
        return TFHardSigmoid()
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {name!r}")


def _conv_norm_act(
    in_channels: int,
    out_channels: int,
    *,
    kernel_size: Triple,
    stride: Triple,
    padding: Triple,
    groups: int,
    bias: bool,
    norm: bool,
    activation: str | None,
) -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        conv3d=nn.Conv3d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            groups=groups,
            bias=bias,
        ),
        norm=(
            nn.BatchNorm3d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
            if norm
            else nn.Identity()
        ),
        act=make_activation(activation) if activation is not None else nn.Identity(),
    )
    return nn.Sequential(layers)


class ConvBlock(nn.Module):
    """Conv3d -> BatchNorm3d or nothing -> activation or nothing, as ``conv_1.{conv3d,norm,act}``.

    ``conv_type="2plus1d"`` with k_t > 1 splits the kernel: ``conv_1`` is spatial (1 x k_h x k_w,
    with the stride) and ``conv_2`` temporal (k_t x 1 x 1), each with its own norm and activation.
    Stride-1 spatial convs pad k // 2 on every side; a spatially strided conv in ``tf_same`` mode
    pads H and W from the input size at run time, as TensorFlow's ``'same'`` does. Time is padded
    k_t // 2 on both sides, or, when ``causal``, with the k_t - 1 previous frames (zeros at the
    start of a video, the stream buffer afterwards).
    """

    state_key: str = ""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: Triple = (1, 1, 1),
        stride: Triple = (1, 1, 1),
        groups: int = 1,
        norm: bool = True,
        activation: str | None = None,
        bias: bool = False,
        padding: PaddingMode = "symmetric",
        causal: bool = False,
        conv_type: ConvType = "3d",
    ) -> None:
        super().__init__()
        check_kernel(kernel_size)
        kt, kh, kw = kernel_size
        split = conv_type == "2plus1d" and kt > 1
        self.kernel_size = kernel_size
        self.stride = stride
        self.tf_pad = padding == "tf_same" and stride[1:] != (1, 1)
        self.buffer_frames = kt - 1 if causal else 0
        time_pad = 0 if causal else kt // 2
        spatial_pad = (0, 0) if self.tf_pad else (kh // 2, kw // 2)
        first_kernel: Triple = (1, kh, kw) if split else kernel_size
        self.conv_1 = _conv_norm_act(
            in_channels,
            out_channels,
            kernel_size=first_kernel,
            stride=stride,
            padding=(0 if split else time_pad, *spatial_pad),
            groups=groups,
            bias=bias,
            norm=norm,
            activation=activation,
        )
        self.conv_2: nn.Sequential | None = None
        if split:
            self.conv_2 = _conv_norm_act(
                out_channels,
                out_channels,
                kernel_size=(kt, 1, 1),
                stride=(1, 1, 1),
                padding=(time_pad, 0, 0),
                groups=groups,
                bias=bias,
                norm=norm,
                activation=activation,
            )

    @property
    def conv(self) -> nn.Conv3d:
        conv = self.conv_1.conv3d
        assert isinstance(conv, nn.Conv3d)
        return conv

    def _with_past(self, x: torch.Tensor, state: StreamState | None) -> torch.Tensor:
        """Prepend the k_t - 1 previous frames (causal mode); store the new buffer in ``state``."""
        if not self.buffer_frames:
            return x
        past = state.get(self.state_key) if state is not None else None
        if past is None:
            b, c, _, h, w = x.shape
            past = x.new_zeros((b, c, self.buffer_frames, h, w))
        full = torch.cat([past, x], dim=2)
        if state is not None:
            state[self.state_key] = full[:, :, -self.buffer_frames :]
        return full

    def _spatial(self, x: torch.Tensor) -> torch.Tensor:
        if self.tf_pad:
            x = F.pad(x, spatial_same_pads(x, self.kernel_size[1:], self.stride[1:]))
        out: torch.Tensor = self.conv_1(x)
        return out

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        if self.conv_2 is None:
            return self._spatial(self._with_past(x, state))
        out: torch.Tensor = self.conv_2(self._with_past(self._spatial(x), state))
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
            pads = spatial_same_pads(x, SKIP_POOL[1:], self.stride[1:])
        # Explicit padding and a count of the real pixels under each window: this excludes the
        # padding from the mean, like TF's pool, and also works on maps smaller than the window.
        sums = F.avg_pool3d(F.pad(x, pads), SKIP_POOL, stride=self.stride, divisor_override=1)
        ones = F.pad(x.new_ones((1, 1, 1, *x.shape[-2:])), pads)
        counts = F.avg_pool3d(ones, SKIP_POOL, stride=self.stride, divisor_override=1)
        return sums / counts

    def extra_repr(self) -> str:
        return f"kernel_size={SKIP_POOL}, stride={self.stride}, padding={self.padding!r}"


class CumulativePool(nn.Module):
    """Mean over H, W and all frames so far; ``frames`` (B, C, T, 1, 1) are per-frame means.

    Returns (B, C, T, 1, 1): output t averages frames 0..t of the video (earlier chunks included
    through ``state``).
    """

    state_key: str = ""

    def forward(self, frames: torch.Tensor, state: StreamState | None) -> torch.Tensor:
        sums = frames.cumsum(dim=2)
        seen = 0
        if state is not None and f"{self.state_key}.pool_sum" in state:
            sums = sums + state[f"{self.state_key}.pool_sum"]
            seen = int(state[f"{self.state_key}.pool_count"])
        t = frames.shape[2]
        if state is not None:
            state[f"{self.state_key}.pool_sum"] = sums[:, :, -1:]
            state[f"{self.state_key}.pool_count"] = torch.tensor(seen + t)
        counts = torch.arange(seen + 1, seen + t + 1, device=frames.device, dtype=frames.dtype)
        return sums / counts.view(1, 1, t, 1, 1)


class SqueezeExcitation(nn.Module):
    """Pool, reduce (activation), expand (gating), rescale channels.

    ``se_type="3d"`` pools over T, H, W (cumulatively over T when causal); ``"2plus3d"``
    concatenates that pool with the per-frame spatial mean, so the gate varies per frame.
    """

    def __init__(
        self,
        channels: int,
        hidden: int,
        *,
        causal: bool = False,
        se_type: SEType = "3d",
        activation: str = "swish",
        gating_activation: str = "sigmoid",
    ) -> None:
        super().__init__()
        self.causal = causal
        self.se_type = se_type
        pooled_channels = channels * (2 if se_type == "2plus3d" else 1)
        self.fc1 = ConvBlock(pooled_channels, hidden, norm=False, activation=activation, bias=True)
        self.fc2 = ConvBlock(hidden, channels, norm=False, activation=gating_activation, bias=True)
        self.pool = CumulativePool() if causal else None

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        frames = x.mean(dim=(3, 4), keepdim=True)  # B C T 1 1
        if self.pool is not None:
            pooled = self.pool(frames, state)  # B C T 1 1
        else:
            pooled = x.mean(dim=(2, 3, 4), keepdim=True)  # B C 1 1 1
        if self.se_type == "2plus3d":
            pooled = torch.cat([pooled.expand_as(frames), frames], dim=1)
        scale: torch.Tensor = self.fc2(self.fc1(pooled))
        return x * scale


class MoViNetBlock(nn.Module):
    """Inverted bottleneck: expand, depthwise conv, SE, project, scaled residual add."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        expand_filters: int,
        kernel_size: Triple,
        stride: Triple,
        padding: PaddingMode = "symmetric",
        causal: bool = False,
        conv_type: ConvType = "3d",
        se_type: SEType = "3d",
        activation: str = "swish",
        gating_activation: str = "sigmoid",
        se_ratio: float = 0.25,
    ) -> None:
        super().__init__()
        width = expand_filters
        self.expand = ConvBlock(in_channels, width, activation=activation, conv_type=conv_type)
        self.deep = ConvBlock(
            width,
            width,
            kernel_size=kernel_size,
            stride=stride,
            groups=width,
            activation=activation,
            padding=padding,
            causal=causal,
            conv_type=conv_type,
        )
        se_width = width * (2 if se_type == "2plus3d" else 1)
        self.se = SqueezeExcitation(
            width,
            round_channels(se_ratio * se_width),
            causal=causal,
            se_type=se_type,
            activation=activation,
            gating_activation=gating_activation,
        )
        self.project = ConvBlock(width, out_channels, conv_type=conv_type)
        self.res: nn.Sequential | None = None
        strided = stride != (1, 1, 1)
        if strided or in_channels != out_channels:
            skip: list[nn.Module] = [SkipPool(stride, padding=padding)] if strided else []
            skip.append(ConvBlock(in_channels, out_channels, conv_type=conv_type))
            self.res = nn.Sequential(*skip)
        self.alpha = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        shortcut = x if self.res is None else self.res(x)
        out = self.se(self.deep(self.expand(x), state), state)
        return shortcut + self.alpha * self.project(out)


def assign_state_keys(model: nn.Module) -> None:
    """Name every stateful module after its path in ``model`` (its keys in a StreamState)."""
    for name, module in model.named_modules():
        if isinstance(module, ConvBlock | CumulativePool):
            module.state_key = name
