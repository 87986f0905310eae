"""Train the embedded victim on SynthActions and write its weights with their provenance.

The data is generated on the fly (every step sees fresh clips), so the model cannot overfit and
held-out accuracy tracks training progress. Motion-only classes have a long plateau at chance
when trained from scratch on hard data; a short curriculum (clean backgrounds, big objects first,
then the standard distribution) and a warm-up get through it quickly.
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from shared.synthactions import CLASS_NAMES, SynthActions
from victim_server.inference.preprocess import preprocess
from victim_server.models.config import InputSpec, ModelConfig
from victim_server.models.factory import create_model, model_config
from victim_server.models.weights import save_weights


@dataclass(frozen=True)
class TrainConfig:
    architecture: str = "swin3d_micro"
    tag: str = "synthactions"
    seed: int = 0
    eval_seed: int = 1  # a seed the training stream never uses
    frames: int = 16
    size: int = 32
    batch_size: int = 64
    steps: int = 3200
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 150
    label_smoothing: float = 0.1
    curriculum_start: float = 0.5  # difficulty of the first step
    curriculum_steps: int = 400  # steps until the standard distribution (difficulty 1.0)
    eval_every: int = 250
    eval_clips: int = 1024
    time_limit_s: float = 27 * 60
    threads: int = 0  # 0: all cores
    loader_workers: int = 1

    def difficulty(self, step: int) -> float:
        if step >= self.curriculum_steps:
            return 1.0
        return self.curriculum_start + (1 - self.curriculum_start) * step / self.curriculum_steps


class _SynthStream(IterableDataset[tuple[torch.Tensor, torch.Tensor]]):
    """Fresh training batches in curriculum order; batch k uses clips k*B .. (k+1)*B-1."""

    def __init__(self, config: TrainConfig, first_step: int) -> None:
        self.config = config
        self.first_step = first_step

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        c = self.config
        for step in range(self.first_step, c.steps):
            data = SynthActions(
                seed=c.seed,
                frames=c.frames,
                height=c.size,
                width=c.size,
                difficulty=c.difficulty(step),
            )
            clips, labels = data.batch(step * c.batch_size, c.batch_size)
            yield torch.from_numpy(clips), torch.from_numpy(labels)


def _lr_factor(step: int, progress: float, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay over ``progress`` (0..1) of the run."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.inference_mode()
def evaluate_accuracy(
    model: nn.Module, data: SynthActions, *, count: int, batch_size: int = 128, start: int = 0
) -> float:
    """Top-1 accuracy of ``model`` on clips ``start .. start+count-1`` of ``data``."""
    model.eval()
    spec = model_config(model).input
    correct = 0
    for clips, labels in data.iter_batches(batch_size, start=start, stop=start + count):
        logits = model(preprocess(clips, spec))
        correct += int((logits.argmax(1).numpy() == labels).sum())
    return correct / count


def train_embedded(
    config: TrainConfig, out_dir: Path, *, show_progress: bool = True
) -> dict[str, Any]:
    """Train, evaluate on a held-out seed, write ``<arch>.<tag>.safetensors`` + training JSON."""
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    spec = InputSpec(
        frames=config.frames,
        height=config.size,
        width=config.size,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
    )
    model = create_model(
        config.architecture, num_classes=len(CLASS_NAMES), labels=CLASS_NAMES, input_spec=spec
    )
    cfg = replace(model_config(model), tag=config.tag)
    model.model_config = cfg  # type: ignore[assignment]
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    loader = DataLoader(
        _SynthStream(config, 0),
        batch_size=None,
        num_workers=config.loader_workers,
        prefetch_factor=4 if config.loader_workers else None,
        persistent_workers=False,
    )
    held_out = SynthActions(
        seed=config.eval_seed, frames=config.frames, height=config.size, width=config.size
    )
    history: list[dict[str, float]] = []
    started = time.perf_counter()
    step = 0
    with _progress(show_progress) as bar:
        task = bar.add_task("train-embedded", total=config.steps, info="")
        model.train()
        for step, (clips, labels) in enumerate(loader):
            logits = model(preprocess(clips, spec))
            loss = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
            elapsed = time.perf_counter() - started
            # Progress is the larger of steps done and time used, so that a slow machine still
            # finishes the schedule (and the run) within the time limit.
            progress = max(step / config.steps, elapsed / config.time_limit_s)
            for group in optimizer.param_groups:
                group["lr"] = config.lr * _lr_factor(step, progress, config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            last = step + 1 == config.steps or progress >= 1.0
            if (step + 1) % config.eval_every == 0 or last:
                acc = evaluate_accuracy(model, held_out, count=min(512, config.eval_clips))
                model.train()
                history.append(
                    {
                        "step": step + 1,
                        "elapsed_s": round(elapsed, 1),
                        "loss": round(float(loss), 4),
                        "held_out_top1": acc,
                    }
                )
            info = f"loss {float(loss):.3f} diff {config.difficulty(step):.2f}"
            if history:
                info += f" acc {history[-1]['held_out_top1']:.3f}"
            bar.update(task, advance=1, info=info)
            if last:
                break
    train_seconds = time.perf_counter() - started
    model.eval()
    accuracy = evaluate_accuracy(model, held_out, count=config.eval_clips, start=100_000)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_path = save_weights(model, out_dir / f"{cfg.model_tag}.safetensors", cfg)
    record = {
        "model": cfg.model_tag,
        "train_config": asdict(config),
        "steps_done": step + 1,
        "train_seconds": round(train_seconds, 1),
        "held_out": {
            "seed": config.eval_seed,
            "start": 100_000,
            "clips": config.eval_clips,
            "top1": accuracy,
        },
        "history": history,
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_bytes": weights_path.stat().st_size,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "clip_shape": [config.frames, config.size, config.size, 3],
    }
    (out_dir / f"{cfg.model_tag}.training.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        disable=not enabled,
    )


def as_model_config(record: dict[str, Any]) -> ModelConfig:  # pragma: no cover - convenience
    return ModelConfig.from_dict(record)


_ = np  # numpy is used by type annotations in callers
