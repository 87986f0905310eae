"""Lottery-ticket pruning: global magnitude masks, masks held while training, the rewind point
and rewinding, and the rounds of ``run_lottery`` starting from the rewound weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

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
    prunable_modules,
)
from attacker.prune.rewind import StepSnapshot, rewind
from attacker.stages.train import build_student
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
