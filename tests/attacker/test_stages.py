"""The attacker's stages: student and loss from the config, budget points, continual vs fresh
training over the points, the report's point entries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_training import _transfer

from attacker.config import AttackConfig, validate_config
from attacker.eval.fidelity import Fidelity
from attacker.stages.report import point_entry
from attacker.stages.train import (
    budget_points,
    build_run_loss,
    build_student,
    point_settings,
    train_over_points,
    train_settings,
)
from attacker.students import StudentModel, get_student_entry
from attacker.train.loop import TrainResult, batches_per_epoch
from shared.schemas import OutputMode


def _config(tmp_path: Path, **train: Any) -> AttackConfig:
    return validate_config(
        {
            "budget": 48,
            "out": str(tmp_path / "run"),
            "query": {"source": {"kind": "noise"}},
            "student": {"architecture": "tiny3d", "kwargs": {"widths": [8, 8, 16, 16]}},
            "train": {"batch_size": 16, "warmup_steps": 1, **train},
            "eval": {"points": [0.5, 1.0]},
        }
    )


@pytest.mark.parametrize("architecture", ["tiny3d", "r2plus1d_18", "x3d_xs"])
def test_student_normalises_with_its_own_architecture_mean_and_std(
    architecture: str, tmp_path: Path
) -> None:
    try:
        entry = get_student_entry(architecture)
    except KeyError:
        pytest.skip(f"{architecture} is not registered here")
    config = validate_config(
        {
            "budget": 10,
            "query": {"source": {"kind": "noise"}},
            "student": {"architecture": architecture, "kwargs": entry.tiny_kwargs},
        }
    )
    student = build_student(config, labels=["a", "b", "c"], clip_shape=[8, 32, 32, 3])
    prep = student.student_config.preprocessing
    assert (prep.mean, prep.std) == (entry.mean, entry.std)
    assert (prep.frames, prep.height, prep.width) == (8, 32, 32)


def test_the_run_seed_fixes_the_initial_weights(tmp_path: Path) -> None:
    config = _config(tmp_path)
    a = build_student(config, labels=["a", "b"], clip_shape=[8, 16, 16])
    b = build_student(config, labels=["a", "b"], clip_shape=[8, 16, 16])
    other = build_student(
        config.model_copy(update={"seed": 1}), labels=["a", "b"], clip_shape=[8, 16, 16]
    )
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert any(
        not torch.equal(x, y) for x, y in zip(a.parameters(), other.parameters(), strict=True)
    )


def test_budget_points_and_compute_that_grows_with_the_data(tmp_path: Path) -> None:
    config = _config(tmp_path, epochs=4, min_steps=3)
    assert budget_points(config, 48) == [24, 48]
    # A fresh student on N clips: epochs x batches; never fewer than min_steps.
    assert train_settings(config, 48, "probs").steps == 4 * batches_per_epoch(48, 16) == 12
    assert train_settings(config, 2, "probs").steps == 4  # one batch x 4 epochs
    assert point_settings(config, 1, "probs").steps == 3  # min_steps
    capped = _config(tmp_path, epochs=4, max_clip_steps=64)
    assert point_settings(capped, 100, "probs").steps == 4  # 64 clip-steps / batch 16
    assert point_settings(config, 100, "probs").warmup_steps == 1


def test_hard_label_losses_train_at_a_fraction_of_the_learning_rate(tmp_path: Path) -> None:
    config = _config(tmp_path, lr=6e-3)
    for mode in ("probs", "logits", "topk"):  # soft targets: the configured rate
        assert point_settings(config, 10, mode).lr == 6e-3
    assert point_settings(config, 10, "label").lr == pytest.approx(2e-3)  # hard_ce via auto
    assert train_settings(config, 48, OutputMode.LABEL).lr == pytest.approx(2e-3)
    # It follows the loss, not the mode: hard_ce named for a probabilities key trains slower too.
    named = _config(tmp_path, lr=6e-3, loss="hard_ce")
    assert point_settings(named, 10, "probs").lr == pytest.approx(2e-3)
    ratio = _config(tmp_path, lr=6e-3, hard_label_lr_ratio=1.0)
    assert point_settings(ratio, 10, "label").lr == 6e-3
    with pytest.raises(ValueError, match="hard_label_lr_ratio"):
        _config(tmp_path, hard_label_lr_ratio=0)


def test_the_true_label_weight_reaches_the_loss(tmp_path: Path) -> None:
    loss = build_run_loss(_config(tmp_path, true_label_weight=0.5), OutputMode.PROBS)
    assert loss.true_label is not None and loss.true_label.weight == 0.5
    assert build_run_loss(_config(tmp_path), OutputMode.LABEL).name == "hard_ce"


@pytest.mark.parametrize("plan", ["continual", "fresh"])
def test_training_over_points(plan: str, tmp_path: Path) -> None:
    transfer = _transfer(tmp_path / "t", OutputMode.PROBS)
    config = _config(tmp_path, plan=plan, epochs=2)
    seen: list[tuple[int, StudentModel, TrainResult]] = []
    last = train_over_points(
        config,
        transfer,
        on_point=lambda q, s, r: seen.append((q, s, r)),
        show_progress=False,
    )
    assert [q for q, _, _ in seen] == [24, 48]
    assert seen[-1][1] is last
    if plan == "continual":
        # One student trained on; the second point adds 2 passes over the 24 new clips.
        assert seen[0][1] is seen[1][1]
        assert [r.steps for _, _, r in seen] == [3, 3]
    else:
        assert seen[0][1] is not seen[1][1]
        assert [r.steps for _, _, r in seen] == [4, 6]
    assert all(np.isfinite(r.history[-1]["loss"]) for _, _, r in seen)


def test_continual_training_resumes_from_its_checkpoints(tmp_path: Path) -> None:
    transfer = _transfer(tmp_path / "t", OutputMode.PROBS)
    config = _config(tmp_path, epochs=2)
    first: list[TrainResult] = []
    student = train_over_points(
        config,
        transfer,
        on_point=lambda q, s, r: first.append(r),
        checkpoints=tmp_path / "ckpt",
        show_progress=False,
    )
    again: list[TrainResult] = []
    resumed = train_over_points(
        config,
        transfer,
        on_point=lambda q, s, r: again.append(r),
        checkpoints=tmp_path / "ckpt",
        show_progress=False,
    )
    assert [r.resumed_from_epoch for r in again] == [r.epochs for r in first]
    for a, b in zip(student.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_point_entries_carry_fidelity_and_each_loss_part() -> None:
    trained = TrainResult(
        steps=7,
        epochs=2,
        seconds=1.25,
        history=[{"epoch": 2, "steps": 7, "loss": 0.5, "distill": 0.4, "true_label": 0.1}],
    )
    fidelity = Fidelity(
        clips=10, top1_agreement=0.8, top5_agreement=1.0, accuracy=0.7, victim_accuracy=0.9
    )
    entry = point_entry(100, fidelity, trained)
    assert entry["queries"] == 100 and entry["top1_agreement"] == 0.8 and entry["steps"] == 7
    assert entry["loss_parts"] == {"loss": 0.5, "distill": 0.4, "true_label": 0.1}
