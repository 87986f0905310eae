"""Lottery-ticket pruning: global magnitude masks, masks held while training, the rewind point
and rewinding, and the rounds of ``run_lottery`` starting from the rewound weights."""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

import attacker.prune.lottery as lottery
from attacker.config import validate_config
from attacker.data import TransferManifest, TransferSet, TransferSetWriter
from attacker.eval.fidelity import EvalSet
from attacker.prune.lottery import PruneSettings, run_lottery
from attacker.prune.masks import (
    apply_masks,
    count_sparsity,
    dense_masks,
    effective_state,
    global_magnitude_masks,
    make_permanent,
    masks_at_sparsity,
    prunable_modules,
)
from attacker.prune.rewind import StepSnapshot, rewind
from attacker.prune.teacher import TeacherTerm, distillation_temperature
from attacker.stages.train import build_run_loss, build_student
from attacker.students import student_preprocess
from attacker.train.loop import train_student
from attacker.train.losses import DistillTargets
from shared.synthactions import SynthActions

CLASSES = 4


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv3d(3, 4, 3, padding=1),
        nn.BatchNorm3d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool3d(1),
        nn.Flatten(),
        nn.Linear(4, CLASSES),
    )


def _weights(model: nn.Module) -> torch.Tensor:
    return torch.cat([m.weight.detach().flatten() for m in prunable_modules(model).values()])


def test_global_magnitude_masks_prune_the_smallest_across_layers_and_never_revive() -> None:
    model = _net()
    assert set(prunable_modules(model)) == {"0", "5"}  # conv and linear; not the norm
    total = _weights(model).numel()
    masks = global_magnitude_masks(model, dense_masks(model), 0.5)
    kept = torch.cat([m.flatten() for m in masks.values()])
    assert int((~kept).sum()) == round(0.5 * total)
    magnitudes = _weights(model).abs()
    assert magnitudes[~kept].max() <= magnitudes[kept].min()
    # Globally, not per layer: the linear layer's weights are made large, so only conv ones go.
    with torch.no_grad():
        model[5].weight.mul_(1000.0)
    masks = global_magnitude_masks(model, dense_masks(model), 0.5)
    assert bool(masks["5"].all()) and int((~masks["0"]).sum()) == round(0.5 * total)

    # A pruned weight grown large is not revived: the next round prunes among survivors.
    first = global_magnitude_masks(model, dense_masks(model), 0.2)
    pruned_at = (~first["0"]).nonzero()[0]
    with torch.no_grad():
        model[0].weight[tuple(pruned_at)] = 1e6
    second = global_magnitude_masks(model, first, 0.2)
    assert not bool(second["0"][tuple(pruned_at)])
    removed_before = int(sum((~m).sum() for m in first.values()))
    removed_after = int(sum((~m).sum() for m in second.values()))
    assert removed_after == removed_before + round(0.2 * (total - removed_before))
    for name in first:
        assert not bool((second[name] & ~first[name]).any())


def test_masks_hold_while_training_and_become_plain_zeros() -> None:
    model = _net()
    masks = global_magnitude_masks(model, dense_masks(model), 0.6)
    apply_masks(model, masks)
    before = effective_state(model)
    optimiser = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)
    for _ in range(5):
        loss = model(torch.randn(4, 3, 4, 6, 6)).square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = effective_state(model)
    for name, mask in masks.items():
        weight = after[f"{name}.weight"]
        assert bool((weight[~mask] == 0).all())
        assert not torch.equal(weight[mask], before[f"{name}.weight"][mask])
    pruned = int(sum((~m).sum() for m in masks.values()))
    make_permanent(model)
    keys = set(model.state_dict())
    assert "0.weight" in keys and not any(k.endswith(("_orig", "_mask")) for k in keys)
    count = count_sparsity(model)
    assert count.prunable_zero == pruned and count.prunable == _weights(model).numel()
    assert count.parameters > count.prunable  # biases and the norm counted, not pruned


def _sgd_steps(model: nn.Module, steps: int) -> list[dict[str, torch.Tensor]]:
    """Plain training: one training-mode forward per step; the state after each step."""
    optimiser = torch.optim.SGD(model.parameters(), lr=0.5)
    states = []
    model.train()
    for step in range(steps):
        torch.manual_seed(step)
        loss = model(torch.randn(4, 3, 4, 6, 6)).square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        states.append(effective_state(model))
        model.eval()
        model(torch.randn(2, 3, 4, 6, 6))  # evaluation forwards are not steps
        model.train()
    return states


@pytest.mark.parametrize("step", [0, 2, 9])
def test_step_snapshot_keeps_the_weights_after_k_steps(step: int) -> None:
    model = _net()
    initial = effective_state(model)
    with StepSnapshot(model, step) as snapshot:
        states = _sgd_steps(model, 5)
    expected = initial if step == 0 else states[min(step, 5) - 1]
    assert snapshot.taken_at == min(step, 5)
    assert set(snapshot.state) == set(expected)
    for key, value in expected.items():
        assert torch.equal(snapshot.state[key], value), key
    assert not torch.equal(states[-1]["0.weight"], initial["0.weight"])


def test_rewind_restores_survivors_norms_and_buffers_and_zeroes_the_pruned() -> None:
    model = _net()
    with StepSnapshot(model, 1) as snapshot:
        _sgd_steps(model, 4)
    masks = global_magnitude_masks(model, dense_masks(model), 0.5)
    rewind(model, snapshot.state, masks)
    now = effective_state(model)
    for key, value in snapshot.state.items():
        module = key.removesuffix(".weight")
        if key.endswith(".weight") and module in masks:
            assert torch.equal(now[key], value * masks[module])
        else:  # biases, BatchNorm scale/shift, running statistics
            assert torch.equal(now[key], value), key
    # Masks are held after rewinding: training keeps the pruned weights at zero.
    _sgd_steps(model, 2)
    assert bool((effective_state(model)["0.weight"][~masks["0"]] == 0).all())


def _transfer(root: Path, n: int = 48) -> TransferSet:
    data = SynthActions(seed=5, frames=8, height=16, width=16)
    manifest = TransferManifest(
        victim={}, output="probs", labels=[f"c{i}" for i in range(CLASSES)], clip_shape=[8, 16, 16]
    )
    with TransferSetWriter(root, manifest) as writer:
        i = 0
        while writer.manifest.count < n:
            label = data.label(i)
            if label < CLASSES:
                probs = np.full(CLASSES, 0.1 / (CLASSES - 1))
                probs[label] = 0.9
                writer.append(
                    data.clip(i),
                    clip_hash=f"{i:x}",
                    recipe={},
                    result={"index": label, "label": f"c{label}", "probs": probs.tolist()},
                    true_label=None,
                    paid=True,
                )
            i += 1
    return TransferSet(root)


def test_every_pruning_round_trains_from_the_rewound_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = validate_config(
        {
            "budget": 48,
            "query": {"source": {"kind": "noise"}},
            "student": {"architecture": "tiny3d", "kwargs": {"widths": [4, 4, 8, 8]}},
            "train": {"batch_size": 16, "warmup_steps": 1, "precision": "fp32", "lr": 0.01},
        }
    )
    transfer = _transfer(tmp_path / "transfer")
    clips = np.stack([c for _, c in transfer.iter_clips()])[:16]
    eval_set = EvalSet(clips, np.zeros(16, np.int64), np.full(16, -1, np.int64))
    starts: list[dict[str, torch.Tensor]] = []
    real_train = lottery.train_student

    def spy(model: nn.Module, *args: Any, **kwargs: Any) -> Any:
        starts.append(effective_state(model))
        return real_train(model, *args, **kwargs)

    monkeypatch.setattr(lottery, "train_student", spy)
    start = build_student(config, labels=transfer.manifest.labels, clip_shape=[8, 16, 16])
    initial = effective_state(start)
    settings = PruneSettings(rounds=2, rate=0.5, rewind_step=2, epochs=2)
    outcome = run_lottery(
        config,
        transfer,
        eval_set,
        trained=start,
        start=start,
        settings=settings,
        show_progress=False,
    )
    assert [r.round for r in outcome.rows] == [None, 0, 1, 2]
    assert outcome.rewind_taken_at == 2
    for key, value in initial.items():  # round 0 starts from the start weights
        assert torch.equal(starts[0][key], value), key
    assert not torch.equal(outcome.rewind_state["head.weight"], initial["head.weight"])
    for round_start in starts[1:]:  # later rounds: the rewind point with the mask applied
        for key, value in outcome.rewind_state.items():
            zeros = round_start[key] == 0
            assert torch.equal(round_start[key][~zeros], value[~zeros]), key
    assert [round(r.sparsity, 2) for r in outcome.rows] == [0.0, 0.0, 0.5, 0.75]
    assert outcome.model is not None
    assert count_sparsity(outcome.model).sparsity == pytest.approx(0.75, abs=1e-3)
    final_masks = outcome.masks
    for name, module in prunable_modules(outcome.model).items():
        assert bool((module.weight.detach()[~final_masks[name]] == 0).all())


def test_masks_at_sparsity_reach_the_target_count_and_keep_earlier_prunes() -> None:
    model = _net()
    total = _weights(model).numel()
    first = masks_at_sparsity(model, dense_masks(model), 0.3)
    assert int(sum((~m).sum() for m in first.values())) == math.ceil(0.3 * total)
    second = masks_at_sparsity(model, first, 0.8)
    assert int(sum((~m).sum() for m in second.values())) == math.ceil(0.8 * total)
    for name in first:  # pruned weights stay pruned
        assert not bool((second[name] & ~first[name]).any())
    magnitudes = _weights(model).abs()
    kept = torch.cat([m.flatten() for m in second.values()])
    assert magnitudes[~kept].max() <= magnitudes[kept].min()  # never pruned: the largest
    # Asking for less than is already pruned prunes nothing more.
    again = masks_at_sparsity(model, second, 0.5)
    assert all(torch.equal(again[n], second[n]) for n in second)


def test_a_target_sparsity_sets_the_rate_and_the_last_round_lands_on_it() -> None:
    settings = PruneSettings(rounds=4, target_sparsity=0.8)
    assert settings.round_rate == pytest.approx(1 - 0.2**0.25)
    targets = [settings.target(i) for i in range(5)]
    assert targets[0] == 0.0 and targets[-1] == 0.8
    assert targets == sorted(targets)
    assert PruneSettings(rounds=2, rate=0.5).target(2) == 0.75
    with pytest.raises(ValueError, match="rewind"):
        PruneSettings(rewind="later")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="target sparsity"):
        PruneSettings(target_sparsity=1.0)


def _config(**train: Any) -> Any:
    return validate_config(
        {
            "budget": 48,
            "query": {"source": {"kind": "noise"}},
            "student": {"architecture": "tiny3d", "kwargs": {"widths": [4, 4, 8, 8]}},
            "train": {
                "batch_size": 16,
                "warmup_steps": 1,
                "precision": "fp32",
                "lr": 0.01,
                **train,
            },
            "eval": {"points": [0.25, 0.5, 1.0]},
        }
    )


def test_rounds_retrain_with_the_runs_own_recipe_unless_told_otherwise(tmp_path: Path) -> None:
    transfer = _transfer(tmp_path / "transfer")  # 48 clips; points at 12, 24, 48
    continual = _config(epochs=4)
    # The last budget point added 24 clips: 4 passes over them at batch 16 = 6 steps.
    assert lottery.recipe_steps(continual, 48) == 6
    train = lottery.round_train_settings(continual, transfer, PruneSettings(rewind="lr"))
    assert (train.steps, train.lr, train.schedule) == (6, 0.01, "cosine")
    assert lottery.recipe_steps(_config(epochs=4, plan="fresh"), 48) == 12
    passes = lottery.round_train_settings(continual, transfer, PruneSettings(epochs=2))
    assert passes.steps == 6  # 2 passes of 3 batches
    tune = lottery.round_train_settings(continual, transfer, PruneSettings(rewind="finetune"))
    assert tune.schedule == "constant" and tune.lr == pytest.approx(0.01 * 0.01)


def test_a_constant_schedule_keeps_the_learning_rate(tmp_path: Path) -> None:
    transfer = _transfer(tmp_path / "transfer")
    config = _config(epochs=4)
    loss = build_run_loss(config, "probs")
    seen: list[float] = []

    def record(optimizer: torch.optim.Optimizer, *args: Any) -> None:
        seen.append(optimizer.param_groups[0]["lr"])

    for schedule, expect_constant in (("constant", True), ("cosine", False)):
        seen.clear()
        model = build_student(config, labels=transfer.manifest.labels, clip_shape=[8, 16, 16])
        settings = replace(
            lottery.round_train_settings(config, transfer, PruneSettings(rewind="lr")),
            schedule=schedule,
            warmup_steps=0,
        )
        handle = register_optimizer_step_pre_hook(record)
        try:
            train_student(model, transfer, loss, settings, show_progress=False)
        finally:
            handle.remove()
        assert len(seen) == settings.steps
        assert (len(set(seen)) == 1) == expect_constant, seen


def test_lr_rewinding_keeps_the_trained_weights_and_restarts_the_schedule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(epochs=4)
    transfer = _transfer(tmp_path / "transfer")
    clips = np.stack([c for _, c in transfer.iter_clips()])[:16]
    eval_set = EvalSet(clips, np.zeros(16, np.int64), np.full(16, -1, np.int64))
    starts: list[dict[str, torch.Tensor]] = []
    ends: list[dict[str, torch.Tensor]] = []
    schedules: list[Any] = []
    real_train = lottery.train_student

    def spy(model: nn.Module, transfer: Any, loss: Any, settings: Any, **kwargs: Any) -> Any:
        starts.append(effective_state(model))
        schedules.append(settings)
        result = real_train(model, transfer, loss, settings, **kwargs)
        ends.append(effective_state(model))
        return result

    monkeypatch.setattr(lottery, "train_student", spy)
    student = build_student(config, labels=transfer.manifest.labels, clip_shape=[8, 16, 16])
    dense = effective_state(student)
    settings = PruneSettings(rounds=2, target_sparsity=0.8, rewind="lr")
    outcome = run_lottery(
        config,
        transfer,
        eval_set,
        trained=student,
        start=copy.deepcopy(student),
        settings=settings,
        show_progress=False,
    )
    # Round 0 is the run's student as it is (already trained with this recipe): not retrained.
    assert [r.round for r in outcome.rows] == [None, 0, 1, 2]
    assert outcome.rows[1].steps == 0 and len(starts) == 2
    assert outcome.rows[1].fidelity == outcome.rows[0].fidelity
    # Round 1 starts from those weights, pruned; round 2 from round 1's end, pruned again.
    for before, start in ((dense, starts[0]), (ends[0], starts[1])):
        for key, value in before.items():
            kept = start[key] != 0
            assert torch.equal(start[key][kept], value[kept]), key
    assert not torch.equal(starts[1]["head.weight"], starts[0]["head.weight"])
    # Each round runs the whole recipe from its start: same steps, warm-up and cosine.
    assert all(s == schedules[0] and s.schedule == "cosine" for s in schedules)
    assert all(r.steps == lottery.recipe_steps(config, 48) for r in outcome.rows[2:])
    assert [round(r.sparsity, 3) for r in outcome.rows] == [0.0, 0.0, 0.553, 0.8]
    assert outcome.rows[-1].sparsity >= 0.8 and outcome.rewind_state == {}
    assert outcome.model is not None
    assert count_sparsity(outcome.model).sparsity >= 0.8


def _kd_by_hand(student_logits: torch.Tensor, teacher_logits: torch.Tensor, t: float) -> Any:
    target = torch.softmax(teacher_logits / t, dim=1)
    log_q = torch.log_softmax(student_logits / t, dim=1)
    return (target * (target.log() - log_q)).sum(dim=1).mean() * t * t


def test_teacher_term_adds_the_kl_toward_the_dense_outputs_of_the_same_batch() -> None:
    teacher = _net().eval()
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        for parameter in student.get_submodule("5").parameters():
            parameter.mul_(-2.0)
    base = build_run_loss(_config(loss={"name": "kl", "temperature": 4.0}), "probs")
    probs = torch.softmax(torch.randn(4, CLASSES), dim=1)
    targets = DistillTargets(probs=probs, label=probs.argmax(dim=1))
    x = torch.randn(4, 3, 4, 6, 6)
    with TeacherTerm(student, teacher, weight=0.5, temperature=4.0) as term:
        student.train()
        logits = student(x)
        student.eval()
        student(torch.randn(2, 3, 4, 6, 6))  # an evaluation forward does not replace the batch
        parts = term.loss(base)(logits.detach(), targets)
    # The teacher in eval mode, on the same clips.
    expected_kd = _kd_by_hand(logits.detach(), teacher(x), 4.0)
    assert float(parts.parts["teacher"]) == pytest.approx(float(expected_kd), rel=1e-5)
    assert float(expected_kd) > 0.01
    plain = base(logits, targets)
    assert float(parts.total) == pytest.approx(float(plain.total) + 0.5 * float(expected_kd))
    assert float(parts.distill) == pytest.approx(float(plain.distill))
    assert not any(p.requires_grad for p in teacher.parameters())
    assert not student._forward_pre_hooks  # the hook is gone once the block ends
    assert distillation_temperature(base) == 4.0  # the run's KL temperature
    with pytest.raises(ValueError, match="teacher weight"):
        PruneSettings(teacher_weight=-1.0)


def test_pruning_with_a_teacher_keeps_the_student_near_the_dense_one(tmp_path: Path) -> None:
    """The victim's answers here disagree with the (untrained) dense student; with a strong
    teacher term the pruned student stays near the dense student's outputs, without it the
    victim's answers pull it away. The dense student itself is never trained."""
    config = _config(epochs=4)
    transfer = _transfer(tmp_path / "transfer")
    clips = np.stack([c for _, c in transfer.iter_clips()])[:16]
    eval_set = EvalSet(clips, np.zeros(16, np.int64), np.full(16, -1, np.int64))
    dense = build_student(config, labels=transfer.manifest.labels, clip_shape=[8, 16, 16])
    before = effective_state(dense)
    x = student_preprocess(torch.from_numpy(clips), dense.student_config.preprocessing)
    with torch.no_grad():
        dense_logits = dense.eval()(x)
    distance = {}
    for weight in (0.0, 20.0):
        settings = PruneSettings(
            rounds=1, rate=0.5, rewind="lr", epochs=4, lr=0.03, teacher_weight=weight
        )
        outcome = run_lottery(
            config,
            transfer,
            eval_set,
            trained=dense,
            start=copy.deepcopy(dense),
            settings=settings,
            show_progress=False,
        )
        assert outcome.model is not None
        assert outcome.rows[-1].sparsity == pytest.approx(0.5, abs=0.01)
        with torch.no_grad():
            distance[weight] = float(_kd_by_hand(outcome.model.eval()(x), dense_logits, 4.0))
    assert distance[20.0] < 0.5 * distance[0.0], distance
    for key, value in before.items():
        assert torch.equal(effective_state(dense)[key], value), key
