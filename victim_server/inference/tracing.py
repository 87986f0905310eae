"""Serve a CPU model as a frozen TorchScript trace: the GIL is let go once per forward pass.

An eager forward pass returns to Python between torch ops and takes the GIL back after each
one. Under load the event loop holds the GIL about half the time (HTTP, decoding, Redis), so
the model thread waits for it, and pays for the hand-over, hundreds of times a pass. Measured on
the 2-core machine (bench/gil_contention.py: the embedded victim at batch 8, one torch thread,
a second Python thread holding the GIL half the time): eager 1.48 ms of CPU and 2.33 ms of wall
clock per clip (1.29 / 1.29 alone), the frozen trace 1.11 / 1.17 (1.08 / 1.08 alone). A trace
replays the ops it recorded, so it is checked against the eager model on fresh inputs at another
batch size before it is served; if tracing fails or the answers differ, the eager model is
served (and the log says why). What a check on random inputs cannot see: Python in ``forward``
that does more than tensor ops (state kept between calls, branches on the data, sleeps) is not
in the trace; serve such a model with ``trace_model`` off.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable

import torch
from torch import nn

from victim_server.models.config import InputSpec
from victim_server.models.registry import VideoClassifier

log = logging.getLogger("vidsteal.victim")

# float (N, 3, T, H, W) -> (logits (N, C), pooled features (N, D) or None)
Forward = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]

# Traced at one clip and checked at two, so a batch size baked into the trace shows.
_TRACE_BATCH = 1
_CHECK_BATCHES = (2,)
# A model whose eager pass takes longer than this per clip is served eagerly without tracing:
# its ops are long, so taking the GIL back after each costs next to nothing, while tracing and
# checking it costs about ten passes at start-up (swin3d_t on this machine: 5 s a clip, 47 s).
WORTH_TRACING_S = 0.25
_RTOL = 1e-4
_ATOL = 1e-4


class _LogitsAndFeatures(nn.Module):
    """One pass that yields both, as the runner serves a registry model."""

    def __init__(self, model: VideoClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.model.forward_features(x)
        return self.model.forward_head(pooled), pooled


def eager_forward(model: nn.Module, *, with_features: bool) -> Forward:
    if with_features:
        return _LogitsAndFeatures(model)  # type: ignore[arg-type]
    return lambda x: (model(x), None)


def traced_forward(model: nn.Module, spec: InputSpec, *, with_features: bool) -> Forward | None:
    """A frozen trace of ``model``'s serving forward (eval mode, CPU), or None when it cannot be
    traced, its answers differ from the eager model's, or its eager pass is slow enough
    (``WORTH_TRACING_S`` a clip) that the trace would not pay."""
    module: nn.Module = _LogitsAndFeatures(model) if with_features else model  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(0)

    def inputs(batch: int) -> torch.Tensor:
        shape = (batch, 3, spec.frames, spec.height, spec.width)
        return torch.randn(shape, generator=generator)

    began = time.perf_counter()
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            # torch 2.14 calls trace/freeze deprecated in favour of torch.compile, which needs a
            # C++ toolchain at run time, and torch.export, whose graph runs op by op in Python
            # (the GIL again); both still work, and a failure here serves the eager model.
            warnings.simplefilter("ignore", FutureWarning)
            first = inputs(_TRACE_BATCH)
            timed = time.perf_counter()
            module(first)
            seconds = (time.perf_counter() - timed) / _TRACE_BATCH
            if seconds > WORTH_TRACING_S:
                log.info(
                    "serving the eager model: a pass takes %.2f s a clip, too long for the "
                    "GIL's per-op cost to matter",
                    seconds,
                )
                return None
            trace = torch.jit.freeze(torch.jit.trace(module, first).eval())
            for batch in _CHECK_BATCHES:
                x = inputs(batch)
                mismatch = _mismatch(_as_tuple(module(x)), _as_tuple(trace(x)))
                if mismatch:
                    log.warning("serving the eager model: the trace %s (batch %d)", mismatch, batch)
                    return None
    except Exception as exc:  # any model may refuse tracing; eager serving still works
        log.warning("serving the eager model: tracing failed (%s: %s)", type(exc).__name__, exc)
        return None

    log.info(
        "serving a frozen trace of the model (traced and checked in %.1f s)",
        time.perf_counter() - began,
    )

    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = _as_tuple(trace(x))
        return out[0], (out[1] if with_features else None)

    return forward


def _as_tuple(out: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return out if isinstance(out, tuple) else (out,)


def _mismatch(eager: tuple[torch.Tensor, ...], traced: tuple[torch.Tensor, ...]) -> str:
    """What differs between the two outputs ('' when nothing does)."""
    if len(eager) != len(traced):
        return f"returned {len(traced)} outputs, not {len(eager)}"
    for expected, got in zip(eager, traced, strict=True):
        if expected.shape != got.shape:
            return f"returned shape {tuple(got.shape)}, not {tuple(expected.shape)}"
        scale = float(expected.abs().max()) if expected.numel() else 0.0
        if not torch.allclose(got, expected, rtol=_RTOL, atol=_ATOL * (1.0 + scale)):
            worst = float((got - expected).abs().max())
            return f"differs by up to {worst:.3g} (scale {scale:.3g})"
    return ""
