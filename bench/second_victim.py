"""A second victim that is not the embedded one, served through the bring-your-own path.

Trains ``MotionR2plus1d`` (defined here: a (2+1)D CNN with squeeze-excitation on frames and
frame differences; neither the embedded Video Swin nor the attacker's tiny3d student) on
SynthActions seed 4242 (the embedded victim was trained on seed 0), exports it as TorchScript
with a JSON input spec and a labels file, and prints the ``bench/extraction.py`` command that
attacks it through ``--victim-model torchscript``. The record goes to
``bench/results/second_victim.json``.

    .venv/bin/python bench/second_victim.py --out runs/second-victim --steps 1500

(A first try with the registry's ``movinet_micro`` and ``victim_server train-embedded`` stayed at
chance, 0.053 held-out top-1, within 12 minutes of one CPU thread: the plateau DESIGN.md warns of.)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

from shared.synthactions import CLASS_NAMES, SynthActions

SEED = 4242
EVAL_SEED = 4343
FRAMES, SIZE = 16, 32
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _unit(c_in: int, c_out: int, stride: tuple[int, int, int]) -> nn.Sequential:
    """(2+1)D: 1x3x3 spatial then 3x1x1 temporal conv, each with BN and ReLU."""
    return nn.Sequential(
        nn.Conv3d(c_in, c_out, (1, 3, 3), (1, stride[1], stride[2]), (0, 1, 1), bias=False),
        nn.BatchNorm3d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv3d(c_out, c_out, (3, 1, 1), (stride[0], 1, 1), (1, 0, 0), bias=False),
        nn.BatchNorm3d(c_out),
        nn.ReLU(inplace=True),
    )


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv3d(channels, channels // 4, 1)
        self.fc2 = nn.Conv3d(channels // 4, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3, 4), keepdim=True)))))
        return x * scale


class MotionR2plus1d(nn.Module):
    """(B, 3, T, H, W) normalised clips -> (B, classes) logits."""

    def __init__(self, classes: int, widths: tuple[int, ...] = (24, 48, 96, 160)) -> None:
        super().__init__()
        strides = ((1, 2, 2), (2, 2, 2), (2, 2, 2), (1, 1, 1))
        layers: list[nn.Module] = []
        channels = 6
        for width, stride in zip(widths, strides, strict=True):
            layers += [_unit(channels, width, stride), SqueezeExcite(width)]
            channels = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        diff = torch.cat([torch.zeros_like(x[:, :, :1]), x[:, :, 1:] - x[:, :, :-1]], dim=2)
        features = self.features(torch.cat([x, diff], dim=1))
        return self.head(features.mean(dim=(2, 3, 4)))


def normalise(clips: torch.Tensor) -> torch.Tensor:
    """uint8 (N, T, H, W, 3) -> float (N, 3, T, H, W)."""
    x = clips.float().div(255.0).permute(0, 4, 1, 2, 3)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1, 1)
    return (x - mean) / std


@torch.inference_mode()
def accuracy(model: nn.Module, data: SynthActions, count: int, start: int) -> float:
    model.eval()
    clips, labels = data.batch(start, count)
    logits = torch.cat(
        [model(normalise(torch.from_numpy(clips[i : i + 250]))) for i in range(0, count, 250)]
    )
    return float((logits.argmax(1).numpy() == labels).mean())


def train(steps: int, batch: int, lr: float) -> tuple[nn.Module, list[dict[str, float]]]:
    torch.manual_seed(SEED)
    model = MotionR2plus1d(len(CLASS_NAMES))
    data = SynthActions(seed=SEED, frames=FRAMES, height=SIZE, width=SIZE)
    held_out = SynthActions(seed=EVAL_SEED, frames=FRAMES, height=SIZE, width=SIZE)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    history = []
    started = time.perf_counter()
    for step in range(steps):
        warm = min(1.0, (step + 1) / 100)
        for group in optimizer.param_groups:
            group["lr"] = lr * warm * 0.5 * (1 + math.cos(math.pi * step / steps))
        model.train()
        clips, labels = data.batch(step * batch, batch)  # fresh clips every step
        loss = F.cross_entropy(
            model(normalise(torch.from_numpy(clips))),
            torch.from_numpy(labels).long(),
            label_smoothing=0.1,
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % 250 == 0 or step + 1 == steps:
            acc = accuracy(model, held_out, 500, 0)
            history.append({"step": step + 1, "loss": round(loss.item(), 4), "held_out_top1": acc})
            print(json.dumps({**history[-1], "s": round(time.perf_counter() - started)}))
    return model.eval(), history


def export(model: nn.Module, out: Path) -> dict[str, Path]:
    """The bring-your-own files: TorchScript program, JSON input spec, labels."""
    paths = {
        "program": out / "victim.pt",
        "input_spec": out / "input_spec.json",
        "labels": out / "labels.txt",
    }
    with torch.inference_mode():
        program = torch.jit.trace(model, torch.zeros(1, 3, FRAMES, SIZE, SIZE))
    program.save(str(paths["program"]))
    spec = {"frames": FRAMES, "height": SIZE, "width": SIZE, "mean": MEAN, "std": STD}
    paths["input_spec"].write_text(json.dumps(spec))
    paths["labels"].write_text("\n".join(CLASS_NAMES) + "\n")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/second-victim"))
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    model, history = train(args.steps, args.batch, args.lr)
    seconds = time.perf_counter() - started
    held_out = SynthActions(seed=EVAL_SEED, frames=FRAMES, height=SIZE, width=SIZE)
    final = accuracy(model, held_out, 1000, 100_000)
    paths = export(model, args.out)
    command = (
        ".venv/bin/python bench/extraction.py --attacks probs-stacked-affine "
        f"--victim-model torchscript --victim-weights {paths['program']} "
        f"--victim-input {paths['input_spec']} --victim-labels {paths['labels']} "
        "--results extraction_second_victim"
    )
    record = {
        "architecture": "MotionR2plus1d (bench/second_victim.py)",
        "parameters": sum(p.numel() for p in model.parameters()),
        "synthactions_seed": SEED,
        "held_out": {"seed": EVAL_SEED, "start": 100_000, "clips": 1000, "top1": final},
        "train": {**vars(args), "out": str(args.out), "seconds": round(seconds, 1)},
        "history": history,
        "files": {k: str(v) for k, v in paths.items()},
        "attack_command": command,
    }
    path = write_result("second_victim", record)
    print(json.dumps({"held_out_top1": final, "record": str(path)}))
    print(command)


if __name__ == "__main__":
    main()
