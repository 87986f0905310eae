"""The model side of serving: preprocess a micro-batch and run one forward pass."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from victim_server.inference.preprocess import preprocess
from victim_server.inference.tracing import Forward, eager_forward, traced_forward
from victim_server.models.config import ModelConfig


def serving_threads(requested: int, cpus: int | None = None) -> int:
    """Torch intra-op threads for serving: ``requested``, or with 0 one per core less one.

    The event loop (HTTP, decoding, Redis) needs a core of its own: with every core given to
    OpenMP, its workers busy-wait at each barrier while the event loop holds the CPU they spin
    on. Measured on the shared 2-core machine (bench/victim_throughput.py): 2 threads cost
    6-7x the CPU per clip of 1 thread for the same answers."""
    if requested > 0:
        return requested
    return max(1, (cpus or os.cpu_count() or 1) - 1)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but CUDA is not available")
    return torch.device(name)


@dataclass(frozen=True)
class BatchOutput:
    logits: np.ndarray  # (N, C) float32
    # (N, D) float32 penultimate activations (pooled features before the head), from the same
    # forward pass; None for a model that exposes logits only (a bring-your-own program).
    features: np.ndarray | None = None
    # (N, E) float32 detector embeddings (the SEAT encoder's unit vectors) of the same clips,
    # from one encoder pass over the micro-batch; None when the batch was run without one.
    embeddings: np.ndarray | None = None


# uint8 (N, T, H, W, 3) clips -> float32 (N, E) embeddings (``SeatModel.embed``)
Embed = Callable[[np.ndarray], np.ndarray]


class ModelRunner:
    """Owns the model; called only from the batcher's model thread."""

    def __init__(
        self, model: nn.Module, config: ModelConfig, device: torch.device, *, trace: bool = False
    ) -> None:
        """``trace``: on the CPU, serve a frozen TorchScript trace of the model when it answers
        as the eager model does (victim_server/inference/tracing.py); ``traced`` says if so."""
        self.config = config
        self.device = device
        self.model = model.to(device).eval()
        self._autocast = device.type == "cuda"
        if device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last_3d)
        # Models built by the registry split features / head; a loaded program does not.
        self.feature_dim = int(getattr(model, "num_features", 0) or 0)
        with_features = bool(self.feature_dim)
        self._forward: Forward = eager_forward(self.model, with_features=with_features)
        self.traced = False
        if trace and device.type == "cpu":
            traced = traced_forward(self.model, config.input, with_features=with_features)
            if traced is not None:
                self._forward, self.traced = traced, True

    @torch.inference_mode()
    def __call__(
        self, requests: list[np.ndarray], *, embed: Embed | None = None
    ) -> list[BatchOutput]:
        """Each element is one request's uint8 (N, T, H, W, 3); returns one output per request.
        With ``embed``, the micro-batch's clips are also embedded, in one pass after the
        forward (a detector's encoder, like the features: a pass per request costs the encoder's
        fixed cost per request)."""
        joined = _joined(requests)
        x = self._inputs(requests, joined)
        with torch.autocast(self.device.type, enabled=self._autocast):
            raw_logits, pooled = self._forward(x)  # one pass: features, then the head
        logits = raw_logits.float().cpu().numpy()
        features = None if pooled is None else pooled.float().cpu().numpy()
        embeddings = None if embed is None else _embedded(requests, joined, embed)
        outputs: list[BatchOutput] = []
        start = 0
        for clips in requests:
            n = clips.shape[0]
            outputs.append(
                BatchOutput(
                    logits=logits[start : start + n],
                    features=None if features is None else features[start : start + n],
                    embeddings=None if embeddings is None else embeddings[start : start + n],
                )
            )
            start += n
        return outputs

    def _inputs(self, requests: list[np.ndarray], joined: np.ndarray | None) -> torch.Tensor:
        """One preprocess for the whole micro-batch when its clips share a shape (the usual
        case: a preprocess call has a fixed cost that one-clip requests would pay each)."""
        spec, device = self.config.input, self.device
        if joined is not None:
            return preprocess(joined, spec, device=device)
        return torch.cat([preprocess(clips, spec, device=device) for clips in requests])


def _joined(requests: list[np.ndarray]) -> np.ndarray | None:
    """The micro-batch's clips as one array when they share a shape, else None."""
    if len(requests) == 1:
        return requests[0]
    if len({clips.shape[1:] for clips in requests}) == 1:
        return np.concatenate(requests)
    return None


def _embedded(requests: list[np.ndarray], joined: np.ndarray | None, embed: Embed) -> np.ndarray:
    """``embed`` over every request's clips, in order: one call when their shapes match."""
    if joined is not None:
        return embed(joined)
    return np.concatenate([embed(clips) for clips in requests])
