"""Extraction losses: values against closed forms, gradients, targets parsing, factory checks."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from attacker.train.losses import (
    ConfidenceDistillation,
    DistillLoss,
    DistillTargets,
    ExtractionLoss,
    HardLabelCrossEntropy,
    KLDistillation,
    LossParts,
    SoftCrossEntropy,
    TopKAwareLoss,
    TopKRankTerm,
    TrueLabelTerm,
    build_loss,
    complete_topk,
    default_loss_for,
    targets_from_results,
)
from shared.schemas import OutputMode

C = 5
B = 4


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def soft_targets(
    logits: Tensor, *, with_logits: bool = True, true_label: Tensor | None = None
) -> DistillTargets:
    probs = torch.softmax(logits, dim=1)
    return DistillTargets(
        probs=probs,
        logits=logits if with_logits else None,
        label=probs.argmax(dim=1),
        true_label=true_label,
    )


def topk_targets(probs: Tensor, k: int, *, decimals: int | None = None) -> DistillTargets:
    score, index = probs.topk(k, dim=1)
    if decimals is not None:
        score = torch.round(score, decimals=decimals)
    return DistillTargets(topk_index=index, topk_score=score, label=index[:, 0])


def teacher_logits(seed: int = 0, scale: float = 2.0) -> Tensor:
    return torch.randn(B, C, generator=_gen(seed), dtype=torch.float64) * scale


def sgd_step_lowers(loss: Callable[[Tensor], Tensor], start: Tensor, lr: float = 0.1) -> bool:
    logits = start.clone().requires_grad_(True)
    before = loss(logits)
    before.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    with torch.no_grad():
        after = loss(logits - lr * logits.grad)
    return bool(after < before)


# --- KL distillation ---------------------------------------------------------------------------


def test_kl_matches_hand_computed_three_class_example() -> None:
    teacher = torch.tensor([[0.5, 0.25, 0.25]], dtype=torch.float64)
    student = torch.log(torch.tensor([[0.25, 0.5, 0.25]], dtype=torch.float64))
    targets = DistillTargets(probs=teacher, label=torch.tensor([0]))
    # KL = 0.5 ln(0.5/0.25) + 0.25 ln(0.25/0.5) + 0.25 ln 1 = 0.25 ln 2
    expected = 0.25 * math.log(2.0)
    assert KLDistillation(1.0)(student, targets).item() == pytest.approx(expected, abs=1e-12)
    # The same teacher given as logits (any additive constant) gives the same value.
    as_logits = DistillTargets(
        logits=torch.log(teacher) + 3.0, probs=teacher, label=torch.tensor([0])
    )
    assert KLDistillation(1.0)(student, as_logits).item() == pytest.approx(expected, abs=1e-12)


def test_kl_is_zero_at_match_and_positive_otherwise() -> None:
    z = teacher_logits()
    loss = KLDistillation(2.0)
    for targets in (soft_targets(z), soft_targets(z, with_logits=False)):
        assert loss(z.clone(), targets).item() == pytest.approx(0.0, abs=1e-12)
        assert loss(z + 5.0, targets).item() == pytest.approx(0.0, abs=1e-12)  # shift-invariant
        assert loss(teacher_logits(seed=1), targets).item() > 1e-3


def test_kl_temperature_factor_is_t_squared() -> None:
    z, s = teacher_logits(0), teacher_logits(1)
    targets = soft_targets(z)
    for t in (0.5, 1.0, 4.0):
        manual = F.kl_div(
            F.log_softmax(s / t, dim=1),
            F.log_softmax(z / t, dim=1),
            log_target=True,
            reduction="batchmean",
        )
        assert KLDistillation(t)(s, targets).item() == pytest.approx(
            t * t * manual.item(), rel=1e-9
        )


def test_kl_high_temperature_tends_to_logit_matching() -> None:
    z, s = teacher_logits(0), teacher_logits(1)
    d = z - s
    limit = ((d - d.mean(dim=1, keepdim=True)) ** 2).sum(dim=1).mean() / (2 * C)
    value = KLDistillation(1000.0)(s, soft_targets(z)).item()
    assert value == pytest.approx(limit.item(), rel=1e-2)
    # Without the T^2 factor the value would vanish like 1/T^2; with it, it stays put.
    assert KLDistillation(100.0)(s, soft_targets(z)).item() == pytest.approx(value, rel=2e-2)


def test_kl_from_probs_equals_kl_from_logits_at_any_temperature() -> None:
    z, s = teacher_logits(0), teacher_logits(1)
    for t in (0.5, 3.0):
        with_logits = KLDistillation(t)(s, soft_targets(z))
        probs_only = KLDistillation(t)(s, soft_targets(z, with_logits=False))
        assert probs_only.item() == pytest.approx(with_logits.item(), rel=1e-9)


# --- soft and hard cross-entropy ---------------------------------------------------------------


def test_soft_ce_is_minimal_at_match() -> None:
    z = teacher_logits()
    targets = soft_targets(z)
    assert targets.probs is not None
    entropy = -(targets.probs * torch.log(targets.probs)).sum(dim=1).mean()
    at_match = z.clone().requires_grad_(True)
    value = SoftCrossEntropy()(at_match, targets)
    value.backward()
    assert value.item() == pytest.approx(entropy.item(), rel=1e-9)
    assert at_match.grad is not None and at_match.grad.abs().max().item() < 1e-12
    for seed in (1, 2, 3):
        assert SoftCrossEntropy()(teacher_logits(seed), targets).item() > value.item()
    # Same gradient as KL at T = 1: they differ by the teacher entropy only.
    s = teacher_logits(4)
    kl = KLDistillation(1.0)(s, targets).item()
    assert SoftCrossEntropy()(s, targets).item() == pytest.approx(kl + entropy.item(), rel=1e-9)


def test_hard_ce_is_cross_entropy_on_the_victim_label() -> None:
    s = teacher_logits(1)
    label = torch.tensor([0, 3, 2, 4])
    targets = DistillTargets(label=label)
    assert HardLabelCrossEntropy()(s, targets).item() == pytest.approx(
        F.cross_entropy(s, label).item(), rel=1e-12
    )
    smoothed = HardLabelCrossEntropy(0.1)(s, targets).item()
    assert smoothed == pytest.approx(F.cross_entropy(s, label, label_smoothing=0.1).item())
    confident = torch.full((B, C), -20.0, dtype=torch.float64).scatter(1, label[:, None], 20.0)
    assert HardLabelCrossEntropy()(confident, targets).item() < 1e-12
    assert HardLabelCrossEntropy()(s, targets).item() > 0.1


# --- top-k ----------------------------------------------------------------------------------


def test_complete_topk_spreads_leftover_mass_uniformly() -> None:
    index = torch.tensor([[3, 0]])
    score = torch.tensor([[0.6, 0.3]], dtype=torch.float64)
    q = complete_topk(index, score, 5)
    expected = torch.tensor([[0.3, 0.1 / 3, 0.1 / 3, 0.6, 0.1 / 3]], dtype=torch.float64)
    torch.testing.assert_close(q, expected)


def test_complete_topk_handles_rounded_scores_over_one() -> None:
    index = torch.tensor([[1, 2], [0, 1]])
    score = torch.tensor([[0.7001, 0.3002], [0.5, 0.5]], dtype=torch.float64)
    q = complete_topk(index, score, 4)
    torch.testing.assert_close(q.sum(dim=1), torch.ones(2, dtype=torch.float64))
    assert (q >= 0).all()
    # Over one: rescaled, nothing left for the tail.
    torch.testing.assert_close(q[0, [1, 2]], score[0] / score[0].sum())
    assert q[0, [0, 3]].abs().max().item() == 0.0
    # Exactly one: kept as is.
    torch.testing.assert_close(q[1], torch.tensor([0.5, 0.5, 0.0, 0.0], dtype=torch.float64))


def test_complete_topk_with_k_equal_c_renormalises() -> None:
    index = torch.tensor([[2, 0, 1]])
    score = torch.tensor([[0.5, 0.3, 0.1]], dtype=torch.float64)  # sums to 0.9, nowhere to put 0.1
    q = complete_topk(index, score, 3)
    torch.testing.assert_close(q, torch.tensor([[0.3, 0.1, 0.5]], dtype=torch.float64) / 0.9)


def test_topk_loss_with_k_equal_c_equals_soft_ce_and_kl() -> None:
    z, s = teacher_logits(0), teacher_logits(1)
    full = soft_targets(z, with_logits=False)
    assert full.probs is not None
    topk = topk_targets(full.probs, C)
    ce = TopKAwareLoss(divergence="ce")(s, topk).item()
    assert ce == pytest.approx(SoftCrossEntropy()(s, full).item(), rel=1e-9)
    kl = TopKAwareLoss(2.0)(s, topk).item()
    assert kl == pytest.approx(KLDistillation(2.0)(s, full).item(), rel=1e-9)


def test_topk_loss_is_zero_at_the_completed_teacher_and_positive_otherwise() -> None:
    z = teacher_logits()
    targets = topk_targets(torch.softmax(z, dim=1), 2)
    assert targets.topk_index is not None and targets.topk_score is not None
    completed = complete_topk(targets.topk_index, targets.topk_score, C)
    for t in (1.0, 3.0):
        loss = TopKAwareLoss(t)
        assert loss(torch.log(completed), targets).item() == pytest.approx(0.0, abs=1e-12)
        assert loss(z, targets).item() > 1e-4  # the victim's own tail is not uniform


def test_topk_loss_is_finite_with_rounded_scores_and_zero_tail() -> None:
    probs = torch.tensor([[0.70004, 0.30004, 0.0, 0.0, 0.0]] * B, dtype=torch.float64)
    targets = topk_targets(probs, 2, decimals=3)  # 0.700 + 0.300: nothing left for the tail
    over = DistillTargets(
        topk_index=targets.topk_index,
        topk_score=torch.tensor([[0.7005, 0.3004]] * B, dtype=torch.float64),
        label=targets.label,
    )
    s = teacher_logits(1).requires_grad_(True)
    for tg in (targets, over):
        for loss in (
            TopKAwareLoss(2.0),
            TopKAwareLoss(tail="bucket"),
            TopKAwareLoss(rank_weight=1),
        ):
            value = loss(s, tg)
            (grad,) = torch.autograd.grad(value, s)
            assert torch.isfinite(value) and torch.isfinite(grad).all()


def test_topk_bucket_ignores_how_the_tail_is_spread() -> None:
    teacher_k = torch.tensor([[0.5, 0.3]], dtype=torch.float64)
    targets = DistillTargets(
        topk_index=torch.tensor([[0, 1]]), topk_score=teacher_k, label=torch.tensor([0])
    )
    # Student matches the top-2 exactly and puts the 0.2 rest unevenly on classes 2..4.
    student = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.04, 0.01]], dtype=torch.float64))
    assert TopKAwareLoss(tail="bucket")(student, targets).item() == pytest.approx(0.0, abs=1e-12)
    assert TopKAwareLoss(tail="uniform")(student, targets).item() > 1e-3
    assert TopKAwareLoss(tail="bucket")(student.flip(1), targets).item() > 1e-2


def test_topk_rank_term_asks_for_the_teacher_order() -> None:
    index = torch.tensor([[2, 0, 4]])
    score = torch.tensor([[0.5, 0.2, 0.1]])
    rank = TopKRankTerm(margin=1.0)
    good = torch.tensor([[5.0, 0.0, 10.0, -2.0, 3.0]])  # 2 > 0 > 4 > others, gaps >= 1
    assert rank(good, index, score).item() == 0.0
    swapped = torch.tensor([[0.0, 0.0, 10.0, -2.0, 5.0]])  # 4 above 0
    assert rank(swapped, index, score).item() > 0.0
    outsider = torch.tensor([[5.0, 9.0, 10.0, -2.0, 3.0]])  # class 1 (not in top-k) beats 4
    assert rank(outsider, index, score).item() > 0.0
    # Tied teacher scores ask for no order between them.
    tied = torch.tensor([[0.5, 0.2, 0.2]])
    reversed_tie = torch.tensor([[3.0, -9.0, 10.0, -20.0, 5.0]])  # 4 above 0, both at 0.2
    assert rank(reversed_tie, index, tied).item() == 0.0
    assert rank(reversed_tie, index, score).item() > 0.0
    # With rank_weight, the top-k loss adds the term.
    targets = DistillTargets(topk_index=index, topk_score=score, label=index[:, 0])
    plain = TopKAwareLoss()(swapped, targets)
    ranked = TopKAwareLoss(rank_weight=2.0, margin=1.0)(swapped, targets)
    assert ranked.item() == pytest.approx(plain.item() + 2.0 * rank(swapped, index, score).item())


# --- true-label term ---------------------------------------------------------------------------


def test_true_label_term_is_zero_without_labels() -> None:
    s = teacher_logits(1).requires_grad_(True)
    none = DistillTargets(label=torch.zeros(B, dtype=torch.int64))
    unknown = DistillTargets(
        label=torch.zeros(B, dtype=torch.int64), true_label=torch.full((B,), -1)
    )
    for targets in (none, unknown):
        value = TrueLabelTerm(3.0)(s, targets)
        (grad,) = torch.autograd.grad(value, s)
        assert value.item() == 0.0 and not torch.isnan(value)
        assert grad.abs().max().item() == 0.0


def test_true_label_term_is_weighted_ce_over_known_labels_averaged_over_the_batch() -> None:
    s = teacher_logits(1)
    truth = torch.tensor([1, 4, 0, 2])
    all_known = DistillTargets(label=torch.zeros(B, dtype=torch.int64), true_label=truth)
    assert TrueLabelTerm(1.0)(s, all_known).item() == pytest.approx(
        F.cross_entropy(s, truth).item(), rel=1e-12
    )
    assert TrueLabelTerm(0.5)(s, all_known).item() == pytest.approx(
        0.5 * F.cross_entropy(s, truth).item(), rel=1e-12
    )
    partial = DistillTargets(
        label=torch.zeros(B, dtype=torch.int64), true_label=torch.tensor([1, -1, 0, -1])
    )
    # Per clip: the sum over the labelled clips divided by the whole batch, not by the 2 labelled.
    ce = F.cross_entropy(s[[0, 2]], truth[[0, 2]], reduction="sum").item()
    assert TrueLabelTerm(1.0)(s, partial).item() == pytest.approx(ce / B, rel=1e-12)
    assert TrueLabelTerm(0.5)(s, partial).item() == pytest.approx(0.5 * ce / B, rel=1e-12)


def test_a_labelled_clip_weighs_w_times_a_distilled_clip_however_few_are_labelled() -> None:
    """The gradient a labelled clip gets from the true-label term does not grow as the number
    of labelled clips in the batch shrinks (the old ``1 / |L|`` mean gave a lone clip B times)."""
    big = 64
    s = torch.randn(big, C, generator=_gen(3), dtype=torch.float64)
    truth = torch.randint(0, C, (big,), generator=_gen(4))
    grads = []
    for labelled in (1, 5, big):
        true_label = torch.where(torch.arange(big) < labelled, truth, torch.full_like(truth, -1))
        targets = DistillTargets(label=torch.zeros(big, dtype=torch.int64), true_label=true_label)
        x = s.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(TrueLabelTerm(2.0)(x, targets), x)
        grads.append(grad[0])
    one_clip = 2.0 * (torch.softmax(s[0], 0) - F.one_hot(truth[0], C)) / big
    for grad in grads:
        torch.testing.assert_close(grad, one_clip)


# --- ConDi-SR ----------------------------------------------------------------------------------


def test_condi_sr_reduces_to_kl_on_unlabelled_clips() -> None:
    z, s = teacher_logits(0), teacher_logits(1)
    expected = KLDistillation(2.0)(s, soft_targets(z)).item()
    loss = ConfidenceDistillation(2.0, alpha=1.5)
    assert loss(s, soft_targets(z)).item() == pytest.approx(expected, rel=1e-9)
    unknown = soft_targets(z, true_label=torch.full((B,), -1))
    assert loss(s, unknown).item() == pytest.approx(expected, rel=1e-9)


def test_condi_sr_is_ce_on_the_true_label_where_the_teacher_is_wrong() -> None:
    z, s = teacher_logits(0), teacher_logits(1)
    victim = z.argmax(dim=1)
    wrong = (victim + 1) % C
    targets = soft_targets(z, true_label=wrong)
    loss = ConfidenceDistillation(1.0, alpha=0.0)
    torch.testing.assert_close(
        loss.confidence(targets, dtype=z.dtype), torch.zeros(B, dtype=z.dtype)
    )
    assert loss(s, targets).item() == pytest.approx(F.cross_entropy(s, wrong).item(), rel=1e-9)
    # With alpha, the wrong clips are distilled at T (1 + alpha).
    hot = ConfidenceDistillation(1.0, alpha=1.0)(s, targets).item()
    assert hot == pytest.approx(4.0 * F.cross_entropy(s / 2.0, wrong).item(), rel=1e-9)


def test_condi_sr_trusts_the_teacher_where_it_is_right() -> None:
    z, s = teacher_logits(0), teacher_logits(1)
    targets = soft_targets(z, true_label=z.argmax(dim=1))
    loss = ConfidenceDistillation(2.0, alpha=3.0)
    assert loss(s, targets).item() == pytest.approx(
        KLDistillation(2.0)(s, targets).item(), rel=1e-9
    )


def test_condi_sr_soft_confidence_matches_the_formula() -> None:
    z, s = teacher_logits(0), teacher_logits(1)
    truth = torch.tensor([0, 1, -1, 3])
    targets = soft_targets(z, true_label=truth)
    loss = ConfidenceDistillation(2.0, alpha=0.5, confidence="soft")
    p = torch.softmax(z, dim=1)
    total = 0.0
    for i in range(B):
        c = 1.0 if truth[i] < 0 else p[i, truth[i]].item()
        t_i = 2.0 * (1.0 + 0.5 * (1.0 - c))
        q = torch.softmax(z[i] / t_i, dim=0)
        onehot = F.one_hot(truth[i].clamp_min(0), C).to(q.dtype)
        target = c * q + (1.0 - c) * onehot
        student = F.log_softmax(s[i] / t_i, dim=0)
        total += t_i**2 * (target * (torch.log(target) - student)).sum().item()
    assert loss(s, targets).item() == pytest.approx(total / B, rel=1e-9)


# --- shared properties -----------------------------------------------------------------------


def _loss_cases() -> list[tuple[str, DistillLoss, DistillTargets]]:
    z = teacher_logits(0)
    probs = torch.softmax(z, dim=1)
    truth = torch.tensor([0, 1, -1, 3])
    return [
        ("kl", KLDistillation(2.0), soft_targets(z)),
        ("kl_probs", KLDistillation(0.5), soft_targets(z, with_logits=False)),
        ("soft_ce", SoftCrossEntropy(), soft_targets(z)),
        ("hard_ce", HardLabelCrossEntropy(0.1), soft_targets(z)),
        ("topk", TopKAwareLoss(2.0, rank_weight=0.5), topk_targets(probs, 2)),
        ("topk_bucket", TopKAwareLoss(tail="bucket"), topk_targets(probs, 3)),
        ("condi_sr", ConfidenceDistillation(2.0, 1.0), soft_targets(z, true_label=truth)),
        (
            "condi_soft",
            ConfidenceDistillation(confidence="soft"),
            soft_targets(z, true_label=truth),
        ),
    ]


@pytest.mark.parametrize("case", _loss_cases(), ids=lambda c: c[0])
def test_one_sgd_step_lowers_each_loss(case: tuple[str, DistillLoss, DistillTargets]) -> None:
    _, loss, targets = case
    start = teacher_logits(seed=7, scale=1.0)
    assert sgd_step_lowers(lambda s: loss(s, targets), start)


@pytest.mark.parametrize("case", _loss_cases(), ids=lambda c: c[0])
def test_losses_have_no_nans_with_zero_probabilities(
    case: tuple[str, DistillLoss, DistillTargets],
) -> None:
    name, loss, _ = case
    probs = torch.tensor(
        [[1.0, 0.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0, 0.0], [0.0, 0.2, 0.0, 0.8, 0.0]] * 2,
        dtype=torch.float32,
    )
    label = probs.argmax(dim=1)
    truth = torch.tensor([0, 2, -1, 1, 3, -1])
    if name.startswith("topk"):
        targets = topk_targets(probs, 3)
    else:
        targets = DistillTargets(probs=probs, label=label, true_label=truth)
    s = torch.randn(6, C, generator=_gen(3)).requires_grad_(True)
    value = loss(s, targets)
    (grad,) = torch.autograd.grad(value, s)
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    # A student equal to a one-hot-ish teacher is also finite.
    value = loss(torch.log(probs.clamp_min(1e-30)), targets)
    assert torch.isfinite(value)


# --- targets_from_results --------------------------------------------------------------------


def test_targets_from_logits_results() -> None:
    results = [
        {"index": 1, "label": "b", "logits": [0.0, 2.0, -1.0]},
        {"index": 0, "label": "a", "logits": [3.0, 1.0, 1.0]},
    ]
    t = targets_from_results(results, 3, OutputMode.LOGITS, [1, None])
    assert t.logits is not None and t.probs is not None
    torch.testing.assert_close(t.logits, torch.tensor([[0.0, 2.0, -1.0], [3.0, 1.0, 1.0]]))
    torch.testing.assert_close(t.probs, torch.softmax(t.logits, dim=1))
    assert t.label.tolist() == [1, 0] and t.label.dtype == torch.int64
    assert t.true_label is not None and t.true_label.tolist() == [1, -1]
    assert t.topk_index is None and t.topk_score is None


def test_targets_from_probs_results_renormalise() -> None:
    results = [{"index": 2, "label": "c", "probs": [0.1, 0.2, 0.7001]}]
    t = targets_from_results(results, 3, "probs", None)
    assert t.probs is not None and t.logits is None and t.true_label is None
    assert t.probs.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert t.probs.argmax().item() == 2


def test_targets_from_topk_results_sorted_best_first() -> None:
    results = [
        {
            "index": 4,
            "label": "e",
            "topk": [
                {"index": 1, "label": "b", "score": 0.2},
                {"index": 4, "label": "e", "score": 0.7},
            ],
        },
        {
            "index": 0,
            "label": "a",
            "topk": [
                {"index": 0, "label": "a", "score": 0.5},
                {"index": 3, "label": "d", "score": 0.4},
            ],
        },
    ]
    t = targets_from_results(results, 5, OutputMode.TOPK, None)
    assert t.topk_index is not None and t.topk_score is not None
    assert t.topk_index.tolist() == [[4, 1], [0, 3]]
    torch.testing.assert_close(t.topk_score, torch.tensor([[0.7, 0.2], [0.5, 0.4]]))
    assert t.probs is None and t.logits is None and t.label.tolist() == [4, 0]


def test_targets_from_label_results() -> None:
    results = [{"index": 3, "label": "d"}, {"index": 0, "label": "a"}]
    t = targets_from_results(results, 4, OutputMode.LABEL, [None, 2])
    assert t.label.tolist() == [3, 0]
    assert t.probs is None and t.logits is None and t.topk_index is None
    assert t.true_label is not None and t.true_label.tolist() == [-1, 2]


@pytest.mark.parametrize(
    ("results", "mode", "message"),
    [
        ([{"index": 0, "label": "a"}], OutputMode.PROBS, "no 'probs'"),
        ([{"index": 0, "label": "a", "logits": [1.0, 2.0]}], OutputMode.LOGITS, "expected"),
        ([{"index": 0, "label": "a", "topk": []}], OutputMode.TOPK, "no 'topk'"),
        ([{"index": 9, "label": "z"}], OutputMode.LABEL, "outside"),
        ([], OutputMode.LABEL, "no results"),
    ],
)
def test_targets_from_results_rejects_inconsistent_answers(
    results: list[dict[str, object]], mode: OutputMode, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        targets_from_results(results, 3, mode, None)


def test_targets_from_results_rejects_mixed_k() -> None:
    results = [
        {"index": 0, "label": "a", "topk": [{"index": 0, "label": "a", "score": 0.9}]},
        {
            "index": 1,
            "label": "b",
            "topk": [
                {"index": 1, "label": "b", "score": 0.6},
                {"index": 0, "label": "a", "score": 0.3},
            ],
        },
    ]
    with pytest.raises(ValueError, match="k=2"):
        targets_from_results(results, 3, OutputMode.TOPK, None)


# --- factory ---------------------------------------------------------------------------------


def test_default_loss_for_each_mode() -> None:
    assert default_loss_for(OutputMode.LOGITS) == "kl"
    assert default_loss_for(OutputMode.PROBS) == "kl"
    assert default_loss_for(OutputMode.TOPK) == "topk"
    assert default_loss_for("label") == "hard_ce"


@pytest.mark.parametrize("mode", list(OutputMode))
def test_default_loss_builds_for_its_mode(mode: OutputMode) -> None:
    loss = build_loss(default_loss_for(mode), mode)
    assert isinstance(loss, ExtractionLoss)


@pytest.mark.parametrize(
    ("name", "mode", "missing"),
    [
        ("kl", OutputMode.LABEL, "full probabilities or logits"),
        ("soft_ce", OutputMode.TOPK, "full probabilities or logits"),
        ("condi_sr", OutputMode.LABEL, "full probabilities or logits"),
        ("topk", OutputMode.PROBS, "top-k"),
        ("topk", OutputMode.LABEL, "top-k"),
    ],
)
def test_loss_needing_what_the_mode_lacks_is_refused(
    name: str, mode: OutputMode, missing: str
) -> None:
    with pytest.raises(ValueError, match=missing) as info:
        build_loss(name, mode)
    assert "\n" not in str(info.value)
    assert repr(mode.value) in str(info.value)


def test_build_loss_rejects_unknown_names_and_parameters() -> None:
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("mse", OutputMode.LOGITS)
    with pytest.raises(ValueError, match="temprature"):
        build_loss("kl", OutputMode.LOGITS, temprature=2.0)
    with pytest.raises(ValueError, match="true_label_weight"):
        build_loss("kl", OutputMode.LOGITS, true_label_weight=-1.0)


def test_loss_refuses_targets_missing_what_it_needs_at_call_time() -> None:
    s = teacher_logits(1)
    label_only = DistillTargets(label=torch.zeros(B, dtype=torch.int64))
    with pytest.raises(ValueError, match="KLDistillation needs"):
        KLDistillation()(s, label_only)
    with pytest.raises(ValueError, match="top-k"):
        TopKAwareLoss()(s, label_only)


def test_extraction_loss_adds_the_true_label_term() -> None:
    z, s = teacher_logits(0), teacher_logits(1)
    truth = torch.tensor([1, -1, 0, 4])
    targets = soft_targets(z, true_label=truth)
    loss = build_loss("kl", OutputMode.LOGITS, temperature=2.0, true_label_weight=0.5)
    parts = loss(s, targets)
    assert isinstance(parts, LossParts)
    assert parts.distill.item() == pytest.approx(KLDistillation(2.0)(s, targets).item())
    assert parts.true_label.item() == pytest.approx(TrueLabelTerm(0.5)(s, targets).item())
    assert parts.total.item() == pytest.approx(parts.distill.item() + parts.true_label.item())
    assert set(parts.as_floats()) == {"loss", "distill", "true_label"}
    plain = build_loss("kl", OutputMode.LOGITS, temperature=2.0)(s, targets)
    assert plain.true_label.item() == 0.0
    assert plain.total.item() == pytest.approx(parts.distill.item())


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        ("kl", OutputMode.LOGITS),
        ("soft_ce", OutputMode.PROBS),
        ("hard_ce", OutputMode.LABEL),
        ("topk", OutputMode.TOPK),
        ("condi_sr", OutputMode.LOGITS),
    ],
)
def test_built_losses_train_a_free_logit_tensor(name: str, mode: OutputMode) -> None:
    z = teacher_logits(0)
    probs = torch.softmax(z, dim=1)
    truth = torch.tensor([0, 1, -1, 3])
    if mode is OutputMode.TOPK:
        targets = topk_targets(probs, 2)
    else:
        targets = soft_targets(z, true_label=truth)
    loss = build_loss(name, mode, true_label_weight=0.3)
    assert sgd_step_lowers(lambda s: loss(s, targets).total, teacher_logits(9, scale=1.0))
