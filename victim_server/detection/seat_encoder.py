"""The SEAT similarity encoder: a small 3D CNN mapping a clip to a unit vector.

In the spirit of SEAT (Zhang, Chen, Wagner, AISec 2021): an encoder trained contrastively so
that augmented copies of one benign clip (shifted, re-cropped, re-lit, re-encoded, a frame or
two off) land close together and different benign clips land apart. Extraction streams send
many queries that are near each other in that space (perturbed copies of a seed, windows of one
video, one image moved around, noise the encoder collapses), benign users rarely do.

The encoder reads any clip the server accepts: uint8 ``(N, T, H, W, 3)`` is resampled to
:data:`ENCODER_SPEC` the way the server resamples for its model
(``victim_server.inference.preprocess``), so it runs beside any served model. Input channels are
the frames and their temporal differences (motion is what tells SynthActions clips apart).

Files (committed under ``victim_server/detection/weights/``, loaded from local files only)::

    seat_encoder.safetensors   the state dict (float32)
    seat_encoder.json          training record and the detector's calibration (see ``seat.py``)
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from victim_server.detection.base import DetectorUnavailable
from victim_server.inference.preprocess import preprocess
from victim_server.models.config import InputSpec

__all__ = [
    "ENCODER_SPEC",
    "SEAT_DIR",
    "SeatEncoder",
    "SeatModel",
    "load_seat_model",
    "save_seat_model",
]

# What the encoder sees, whatever the served model's spec: 16 frames of 32x32, scaled to
# [0, 1] and centred.
ENCODER_SPEC = InputSpec(frames=16, height=32, width=32, mean=(0.5,) * 3, std=(0.25,) * 3)
SEAT_DIR = Path(__file__).resolve().parent / "weights"
SEAT_WEIGHTS = SEAT_DIR / "seat_encoder.safetensors"


def _block(
    cin: int,
    cout: int,
    kernel: tuple[int, int, int],
    stride: tuple[int, int, int],
    padding: tuple[int, int, int] = (1, 1, 1),
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, kernel, stride=stride, padding=padding, bias=False),
        nn.BatchNorm3d(cout),
        nn.ReLU(inplace=True),
    )


class SeatEncoder(nn.Module):
    """(N, 3, 16, 32, 32) normalised clips -> (N, dim) L2-normalised embeddings."""

    def __init__(self, *, width: int = 16, dim: int = 64) -> None:
        super().__init__()
        self.width, self.dim = width, dim
        self.features = nn.Sequential(
            # frames + temporal differences, cut into 2 x 4 x 4 patches -> 8 x 8 x 8
            _block(6, width, (3, 4, 4), (2, 4, 4), (1, 0, 0)),
            _block(width, 2 * width, (3, 3, 3), (1, 2, 2)),  # 8 x 4 x 4
            _block(2 * width, 4 * width, (3, 3, 3), (2, 1, 1)),  # 4 x 4 x 4
        )
        # A coarse 2 x 2 x 2 grid, not a global pool: where and when things happen matters
        # for telling two clips apart.
        self.pool = nn.AdaptiveAvgPool3d(2)
        self.head = nn.Linear(4 * width * 8, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # N C T H W
        motion = torch.diff(x, dim=2, prepend=x[:, :, :1])
        z = self.pool(self.features(torch.cat([x, motion], dim=1))).flatten(1)
        return F.normalize(self.head(z), dim=1)


@dataclass(frozen=True)
class SeatModel:
    """The trained encoder and its record (training + the detector's calibration);
    ``runtime``, when set, is the same function made cheaper to run (:func:`folded`), and
    :meth:`embed` runs it."""

    encoder: SeatEncoder
    record: dict[str, Any]
    runtime: SeatEncoder | None = None

    def embed(self, clips: np.ndarray, *, batch: int = 64) -> np.ndarray:
        """uint8 (N, T, H, W, 3) clips -> float32 (N, dim) unit vectors."""
        out = []
        encoder = self.runtime or self.encoder
        with torch.inference_mode():
            for start in range(0, len(clips), batch):
                x = preprocess(clips[start : start + batch], ENCODER_SPEC)
                out.append(encoder(x).numpy())
        if not out:
            return np.zeros((0, self.encoder.dim), dtype=np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)


def save_seat_model(encoder: SeatEncoder, record: dict[str, Any], path: Path) -> None:
    """Write ``path`` (safetensors) and its record beside it (``.json``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in encoder.state_dict().items()}
    save_file(state, str(path))
    meta = {"architecture": {"width": encoder.width, "dim": encoder.dim}, **record}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")


def load_seat_model(path: Path | None = None) -> SeatModel:
    """The encoder at ``path`` (default: the committed one); :class:`DetectorUnavailable` with
    the command that makes it when the weights or their record are missing."""
    path = path or SEAT_WEIGHTS
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        raise DetectorUnavailable(
            f"no SEAT encoder weights at {path} (and its .json): run "
            f"python -m victim_server train-detector --out {path}"
        )
    record = json.loads(meta_path.read_text())
    encoder = SeatEncoder(**record["architecture"])
    encoder.load_state_dict(load_file(str(path)))
    encoder.eval()
    return SeatModel(encoder, record, runtime=folded(encoder))


def folded(encoder: SeatEncoder) -> SeatEncoder:
    """A copy of an encoder in eval mode with each BatchNorm folded into the convolution
    before it: the same function (to float rounding) with one op less per block, about a
    fifth less CPU per clip at the server's micro-batch sizes."""
    if encoder.training:
        raise ValueError("fold an encoder in eval mode (its BatchNorm statistics are fixed)")
    out = copy.deepcopy(encoder)
    for block in out.features:
        assert isinstance(block, nn.Sequential)
        conv, norm = block[0], block[1]
        if isinstance(conv, nn.Conv3d) and isinstance(norm, nn.BatchNorm3d):
            block[0] = fuse_conv_bn_eval(conv, norm)
            block[1] = nn.Identity()
    return out
