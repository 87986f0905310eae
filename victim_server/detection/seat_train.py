"""Train the SEAT encoder contrastively on benign SynthActions, then calibrate its detector.

Training (SimCLR's NT-Xent, Chen et al. 2020): each step draws ``batch`` clips from a pool of
benign SynthActions clips of seed :data:`TRAIN_SEED` (the pool is refreshed with fresh clips as
training goes, so thousands of distinct clips are seen at the cost of rendering a few per step),
makes two augmented views of each, and pulls the two views of one clip together and every other
clip away. Views differ by what a copy of a clip can differ by in the wild or in an attacker's
augmentation: a few frames of temporal offset, a shift and re-crop of up to ~15%, brightness,
contrast and colour gain, sensor noise, and (for a share of the pool) an H.264 round trip.

Calibration (:func:`calibrate_seat`), on seed :data:`SEAT_CALIBRATION_SEED` (never trained on):
benign clips -- half of them windows of longer actions, half through H.264, as the OOD monitor's
calibration (``calibration.benign_calibration_batches``) -- are sent in same-class sessions of
1-8 clips (a user uploading related videos: the hardest benign case for a similarity detector),
and each is compared with the ring of the previous :data:`~victim_server.detection.seat.RING`
queries. The near-pair distance threshold is the ``1 - quantile`` quantile of the distances to
the :data:`~victim_server.detection.seat.NEIGHBOURS`-th nearest of them once the ring is full,
so benign queries are flagged at rate about ``1 - quantile``; the detector's CUSUM is fitted on
that rate (``SeatCalibration.fit``).
"""

from __future__ import annotations

import math
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from shared.synthactions import NUM_CLASSES, SynthActions
from victim_server.detection.calibration import benign_calibration_batches, through_codec
from victim_server.detection.seat import NEIGHBOURS, RING, SeatCalibration, kth_nearest
from victim_server.detection.seat_encoder import (
    ENCODER_SPEC,
    SeatEncoder,
    SeatModel,
    load_seat_model,
    save_seat_model,
)

__all__ = [
    "SEAT_CALIBRATION_SEED",
    "TRAIN_SEED",
    "SeatTrainConfig",
    "augment",
    "augmented_pair_distances",
    "calibrate_seat",
    "recalibrate",
    "session_order",
    "train_and_calibrate",
    "train_seat",
]

# SynthActions seeds of this detector, disjoint from every other use (victim 0/1, tests
# 5/7/101/202/303, attacker 777/424242, benign benchmark streams 8080/31337, OOD calibration
# 9001, evaluation 12345).
TRAIN_SEED = 6150
SEAT_CALIBRATION_SEED = 6151

# Renders are larger than the encoder's input so that views can be shifted and re-timed.
_EXTRA_FRAMES = 4
_EXTRA_PIXELS = 4


@dataclass(frozen=True)
class SeatTrainConfig:
    seed: int = TRAIN_SEED
    steps: int = 300
    batch: int = 64  # clips per step (two views each)
    pool: int = 512  # clips held for sampling
    refresh: int = 16  # pool clips replaced by fresh ones per step
    codec_share: float = 0.25  # of fresh clips, also kept as an H.264 round trip
    lr: float = 2e-3
    temperature: float = 0.1
    width: int = 16
    dim: int = 64
    threads: int = 1


def augment(clips: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """uint8 (N, T+4, H+4, W+4, 3) renders -> one random view each, normalised for the
    encoder: (N, 3, T, H, W) at :data:`ENCODER_SPEC`. Per clip: a temporal offset of 0-4
    frames, a square crop of 85-100% of the render at a random place (resampled bilinearly),
    contrast, colour gain, brightness and sensor noise."""
    n, frames = len(clips), ENCODER_SPEC.frames
    height, width = ENCODER_SPEC.height, ENCODER_SPEC.width
    starts = rng.integers(0, clips.shape[1] - frames + 1, n)
    picked = np.stack([clip[t0 : t0 + frames] for clip, t0 in zip(clips, starts, strict=True)])
    x = torch.from_numpy(picked).permute(0, 1, 4, 2, 3).float().div_(255.0)  # N T C H W
    # Crops as affine grids over the whole render ([-1, 1] coordinates): scale s, centre c.
    scale = rng.uniform(0.85, 1.0, n)
    centre = rng.uniform(-1.0, 1.0, (n, 2)) * (1.0 - scale)[:, None]
    theta = np.zeros((n, 2, 3), dtype=np.float32)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = centre
    grid = F.affine_grid(
        torch.from_numpy(theta).repeat_interleave(frames, 0),
        [n * frames, 3, height, width],
        align_corners=False,
    )
    x = F.grid_sample(
        x.reshape(n * frames, 3, *x.shape[-2:]), grid, mode="bilinear", align_corners=False
    ).reshape(n, frames, 3, height, width)
    contrast = torch.from_numpy(rng.uniform(0.75, 1.25, (n, 1, 1, 1, 1))).float()
    gain = torch.from_numpy(rng.uniform(0.9, 1.1, (n, 1, 3, 1, 1))).float()
    shift = torch.from_numpy(rng.uniform(-0.1, 0.1, (n, 1, 1, 1, 1))).float()
    noise = torch.from_numpy(rng.uniform(0.0, 0.03, (n, 1, 1, 1, 1))).float()
    mean = x.mean(dim=(1, 2, 3, 4), keepdim=True)
    x = (x - mean) * contrast * gain + mean + shift + noise * torch.randn_like(x)
    x = x.clamp_(0.0, 1.0)
    m = torch.tensor(ENCODER_SPEC.mean).view(1, 1, 3, 1, 1)
    s = torch.tensor(ENCODER_SPEC.std).view(1, 1, 3, 1, 1)
    return ((x - m) / s).permute(0, 2, 1, 3, 4).contiguous()  # N C T H W


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss for unit vectors ``a[i]``, ``b[i]`` (two views of clip i)."""
    z = torch.cat([a, b])
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    n = len(a)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, target)


class _Pool:
    """Benign renders to sample views from, some also as H.264 round trips; refreshed."""

    def __init__(self, config: SeatTrainConfig, rng: np.random.Generator) -> None:
        self.data = SynthActions(
            seed=config.seed,
            frames=ENCODER_SPEC.frames + _EXTRA_FRAMES,
            height=ENCODER_SPEC.height + _EXTRA_PIXELS,
            width=ENCODER_SPEC.width + _EXTRA_PIXELS,
        )
        self.config, self.rng = config, rng
        self.clips, _ = self.data.batch(0, config.pool)
        self.coded: dict[int, np.ndarray] = {}
        self.next_index = config.pool

    def refresh(self) -> None:
        slots = self.rng.choice(len(self.clips), self.config.refresh, replace=False)
        for slot in slots:
            self.clips[slot] = self.data.clip(self.next_index)
            self.next_index += 1
            self.coded.pop(int(slot), None)
            if self.rng.random() < self.config.codec_share:
                self.coded[int(slot)] = through_codec(
                    self.clips[slot], int(self.rng.choice([23, 28]))
                )

    def views(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        slots = self.rng.choice(len(self.clips), count, replace=False)
        firsts = self.clips[slots]
        seconds = np.stack(
            [
                self.coded.get(int(s), self.clips[s]) if self.rng.random() < 0.5 else self.clips[s]
                for s in slots
            ]
        )
        return augment(firsts, self.rng), augment(seconds, self.rng)


def train_seat(
    config: SeatTrainConfig, *, log_every: int = 50
) -> tuple[SeatEncoder, dict[str, Any]]:
    """The trained encoder (eval mode) and its training record."""
    torch.set_num_threads(max(1, config.threads))
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    encoder = SeatEncoder(width=config.width, dim=config.dim)
    optimiser = torch.optim.AdamW(encoder.parameters(), lr=config.lr, weight_decay=1e-4)
    warmup = max(1, config.steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, config.steps - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lr_at)
    pool = _Pool(config, rng)
    history: list[dict[str, float]] = []
    started = time.perf_counter()
    encoder.train()
    for step in range(config.steps):
        if step:
            pool.refresh()
        a, b = pool.views(config.batch)
        loss = nt_xent(encoder(a), encoder(b), config.temperature)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        if (step + 1) % log_every == 0 or step + 1 == config.steps:
            history.append(
                {
                    "step": step + 1,
                    "loss": round(loss.item(), 4),
                    "elapsed_s": round(time.perf_counter() - started, 1),
                }
            )
    encoder.eval()
    record = {
        "train": {
            **asdict(config),
            "data": "synthactions",
            "clips_seen": pool.next_index,
            "loss": "nt_xent",
            "seconds": round(time.perf_counter() - started, 1),
        },
        "history": history,
        "torch": torch.__version__,
    }
    return encoder, record


def session_order(labels: np.ndarray, rng: np.random.Generator) -> list[int]:
    """An order of the clips as same-class sessions of 1-8 clips (every clip once)."""
    queues = {c: [int(i) for i in np.flatnonzero(labels == c)] for c in range(NUM_CLASSES)}
    order: list[int] = []
    while any(queues.values()):
        label = int(rng.choice([c for c, q in queues.items() if q]))
        take = int(rng.integers(1, 9))
        order += queues[label][:take]
        del queues[label][:take]
    return order


def augmented_pair_distances(
    model: SeatModel, *, seed: int, clips: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Distances between two views of each of ``clips`` fresh clips, and between views of
    different clips (each clip's first view against the next clip's second view)."""
    data = SynthActions(
        seed=seed,
        frames=ENCODER_SPEC.frames + _EXTRA_FRAMES,
        height=ENCODER_SPEC.height + _EXTRA_PIXELS,
        width=ENCODER_SPEC.width + _EXTRA_PIXELS,
    )
    renders, _ = data.batch(0, clips)
    with torch.inference_mode():
        a = model.encoder(augment(renders, rng)).numpy()
        b = model.encoder(augment(renders, rng)).numpy()
    same = np.linalg.norm(a - b, axis=1)
    other = np.linalg.norm(a - np.roll(b, 1, axis=0), axis=1)
    return same, other


def calibrate_seat(
    model: SeatModel,
    *,
    seed: int = SEAT_CALIBRATION_SEED,
    clips: int = 3000,
    quantile: float = 0.99,
    ring: int = RING,
) -> SeatCalibration:
    """Fit the detector's near-pair threshold and CUSUM on benign sessions of ``seed``. The
    ring is at most half the clips (a tiny calibration gets a smaller ring, recorded)."""
    ring = min(ring, clips // 2)
    batches = benign_calibration_batches(
        ENCODER_SPEC, seed=seed, clips=clips, batch=100, codec_fraction=0.5, window_fraction=0.5
    )
    vectors = np.concatenate([model.embed(b) for b in batches])
    labels = SynthActions(seed=seed).labels(0, clips)
    order = session_order(labels, np.random.default_rng(seed))
    stream = vectors[order]
    nearest = np.array(
        [
            kth_nearest(stream[max(0, i - ring) : i], stream[i], NEIGHBOURS)
            for i in range(ring, clips)
        ]
    )
    rng = np.random.default_rng(seed + 1)
    same, other = augmented_pair_distances(model, seed=seed, clips=256, rng=rng)
    calibration = SeatCalibration.fit(
        nearest,
        quantile=quantile,
        ring=ring,
        source={
            "data": "synthactions",
            "seed": seed,
            "benign_clips": clips,
            "order": "sessions 1-8",
        },
    )
    threshold = calibration.threshold
    return calibration.with_source(
        augmented_copies_within=round(float((same < threshold).mean()), 4),
        other_clips_within=round(float((other < threshold).mean()), 4),
        augmented_distance_median=round(float(np.median(same)), 4),
        other_distance_median=round(float(np.median(other)), 4),
    )


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def train_and_calibrate(
    config: SeatTrainConfig, out: Path, *, calibration_clips: int = 3000
) -> dict[str, Any]:
    """Train, calibrate, write ``out`` (+ ``.json``); returns the record written."""
    encoder, record = train_seat(config)
    calibration = calibrate_seat(SeatModel(encoder, record), clips=calibration_clips)
    record = {**record, "git_commit": git_commit(), "calibration": calibration.to_dict()}
    save_seat_model(encoder, record, out)
    return record


def recalibrate(out: Path, *, calibration_clips: int = 3000) -> dict[str, Any]:
    """Calibrate the encoder at ``out`` again (same weights), recording the commit that did."""
    model = load_seat_model(out)
    calibration = calibrate_seat(model, clips=calibration_clips)
    record = {
        **{k: v for k, v in model.record.items() if k != "architecture"},
        "calibration": calibration.to_dict(),
        "calibration_git_commit": git_commit(),
    }
    save_seat_model(model.encoder, record, out)
    return record
