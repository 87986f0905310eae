"""The KnockoffNets peer trains inside ART's loop with the attacker's optimiser: ART only calls
``step()``, so the schedule and the clipping must happen there (plain AdamW at a constant 6e-3
collapsed the deeper student on one seed of three)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from attacker.students import create_student, get_student_entry
from attacker.train.loop import TrainSettings, cosine_factor

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from knockoff_peer import RecipeAdamW


def test_each_step_runs_at_the_recipes_learning_rate_with_clipped_gradients() -> None:
    torch.manual_seed(0)
    entry = get_student_entry("tiny3d")
    student = create_student(
        "tiny3d",
        num_classes=4,
        preprocessing=entry.tiny_preprocessing(),
        **entry.tiny_kwargs,
    )
    settings = TrainSettings(steps=20, lr=0.01, warmup_steps=4, weight_decay=0.05, grad_clip=0.5)
    optimizer = RecipeAdamW(student, settings, total_steps=20)
    decayed = {g["weight_decay"] for g in optimizer.param_groups}
    assert decayed == {0.0, 0.05}  # norms and biases are not decayed
    x = torch.randn(2, 3, *entry.tiny_size)
    for step in range(20):
        optimizer.zero_grad()
        (1000 * student(x).square().mean()).backward()  # large gradients, to be clipped
        optimizer.step()
        head_lr = max(g["lr"] for g in optimizer.param_groups)
        assert head_lr == pytest.approx(0.01 * cosine_factor(step, 20, 4))
        norm = torch.sqrt(
            sum(p.grad.square().sum() for p in student.parameters() if p.grad is not None)
        )
        assert float(norm) <= 0.5 + 1e-4
    assert optimizer.param_groups[0]["lr"] < 0.01 * 0.05  # annealed to almost nothing
