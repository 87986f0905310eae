"""Mixup of queried clips: the mixing, the mixed loss, and the config that turns it on."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attacker.config import TrainSection
from attacker.train.loss_targets import DistillTargets
from attacker.train.losses import build_loss
from attacker.train.mixup import MixedBatch, mix_batch, mixed_loss
from shared.schemas import OutputMode


def _targets(batch: int = 6, classes: int = 5, seed: int = 0) -> DistillTargets:
    gen = torch.Generator().manual_seed(seed)
    probs = torch.rand(batch, classes, generator=gen).softmax(1)
    true = torch.tensor([2, -1, 0, -1, 4, 1])[:batch]
    return DistillTargets(probs=probs, label=probs.argmax(1), true_label=true)


def test_mix_batch_is_a_convex_mix_with_a_permutation_and_repeats_per_step() -> None:
    clips = torch.randn(8, 3, 4, 6, 6)
    mixed = mix_batch(clips, 0.4, seed=3, step=11)
    assert 0.0 <= mixed.weight <= 1.0
    assert sorted(mixed.partner.tolist()) == list(range(8))
    expected = mixed.weight * clips + (1 - mixed.weight) * clips[mixed.partner]
    torch.testing.assert_close(mixed.clips, expected)
    again = mix_batch(clips, 0.4, seed=3, step=11)
    assert again.weight == mixed.weight and torch.equal(again.partner, mixed.partner)
    assert mix_batch(clips, 0.4, seed=3, step=12).weight != mixed.weight
    with pytest.raises(ValueError, match="alpha"):
        mix_batch(clips, 0.0, seed=0, step=0)


def test_take_selects_every_field() -> None:
    targets = _targets()
    index = torch.tensor([5, 0, 0])
    taken = targets.take(index)
    assert taken.probs is not None and targets.probs is not None
    torch.testing.assert_close(taken.probs, targets.probs[index])
    assert taken.label.tolist() == targets.label[index].tolist()
    assert taken.true_label is not None and taken.true_label.tolist() == [1, 2, 2]


def test_mixed_kl_has_the_gradient_of_kl_to_the_mixed_teacher() -> None:
    targets = _targets()
    loss = build_loss("kl", OutputMode.PROBS, temperature=1.0)
    batch = MixedBatch(clips=torch.zeros(6), partner=torch.tensor([3, 4, 5, 0, 1, 2]), weight=0.3)
    logits = torch.randn(6, 5, requires_grad=True)
    mixed_loss(loss, logits, targets, batch).total.backward()
    ours = logits.grad.clone()
    logits.grad = None
    assert targets.probs is not None
    teacher = 0.3 * targets.probs + 0.7 * targets.probs[batch.partner]
    F.kl_div(F.log_softmax(logits, 1), teacher, reduction="batchmean").backward()
    torch.testing.assert_close(ours, logits.grad)


def test_mixed_loss_mixes_every_part_including_the_true_label_term() -> None:
    targets = _targets()
    loss = build_loss("hard_ce", OutputMode.LABEL, true_label_weight=0.5)
    partner = torch.tensor([1, 0, 3, 2, 5, 4])
    batch = MixedBatch(clips=torch.zeros(6), partner=partner, weight=0.25)
    logits = torch.randn(6, 5)
    parts = mixed_loss(loss, logits, targets, batch)
    own, other = loss(logits, targets), loss(logits, targets.take(partner))
    for name in ("total", "distill", "true_label"):
        expected = 0.25 * getattr(own, name) + 0.75 * getattr(other, name)
        torch.testing.assert_close(getattr(parts, name), expected)
    assert set(parts.parts) == set(own.parts)


def test_config_accepts_mixup_and_rejects_a_negative_alpha() -> None:
    assert TrainSection().mixup == 0.0
    assert TrainSection(mixup=0.4).mixup == 0.4
    with pytest.raises(ValueError, match="mixup"):
        TrainSection(mixup=-0.1)
