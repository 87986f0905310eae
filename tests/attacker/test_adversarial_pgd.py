"""PGD on a student: it raises the student's loss, stays within eps in uint8, and shapes its
perturbation per frame or shared; the noise control has the same norm; rate definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attacker.adversarial import (
    PGDOptions,
    flip_rate,
    integer_radius,
    perturbation_shape,
    pgd_linf,
    sign_noise,
    student_logits_fn,
)
from attacker.adversarial.rates import ratio_vs_control
from attacker.students import StudentModel, StudentPreprocessing, create_student, predict
from shared.synthactions import SynthActions


@pytest.fixture(scope="module")
def clips_and_labels() -> tuple[np.ndarray, np.ndarray]:
    clips, labels = SynthActions(seed=31).batch(0, 8)
    return clips, labels.astype(np.int64)


@pytest.fixture(scope="module")
def student() -> StudentModel:
    torch.manual_seed(0)
    model = create_student("tiny3d", num_classes=16)
    with torch.no_grad():  # confident random logits, so the loss reacts to the input
        model.head.weight.mul_(40.0)
    return model.eval()


def _loss(model: StudentModel, clips: np.ndarray, labels: np.ndarray) -> np.ndarray:
    logits = torch.from_numpy(predict(model, clips))
    return F.cross_entropy(logits, torch.from_numpy(labels), reduction="none").numpy()


def test_differentiable_student_matches_predict(
    clips_and_labels: tuple[np.ndarray, np.ndarray],
) -> None:
    clips, _ = clips_and_labels
    torch.manual_seed(1)
    resized = create_student(
        "tiny3d", num_classes=16, preprocessing=StudentPreprocessing(frames=8, height=24, width=24)
    ).eval()
    for model in (resized, create_student("tiny3d", num_classes=16).eval()):
        fn = student_logits_fn(model)
        with torch.no_grad():
            mine = fn(torch.from_numpy(clips).float()).numpy()
        np.testing.assert_allclose(mine, predict(model, clips), atol=1e-5)


def test_pgd_raises_the_clone_loss(
    student: StudentModel, clips_and_labels: tuple[np.ndarray, np.ndarray]
) -> None:
    clips, labels = clips_and_labels
    clean = _loss(student, clips, labels)
    for perturbation, momentum in (("per-frame", 0.0), ("shared", 0.0), ("per-frame", 1.0)):
        options = PGDOptions(eps=8, steps=5, perturbation=perturbation, momentum=momentum)  # type: ignore[arg-type]
        adversarial = pgd_linf(student_logits_fn(student), clips, labels, options)
        attacked = _loss(student, adversarial, labels)
        noise = _loss(
            student, sign_noise(clips, 8, options.perturbation, np.random.default_rng(0)), labels
        )
        # A descent step (wrong gradient sign) would lower the loss instead.
        assert attacked.mean() > clean.mean() + 0.1, (perturbation, clean, attacked)
        assert (attacked > clean).all()
        assert attacked.mean() > noise.mean() + 0.1


@pytest.mark.parametrize("perturbation", ["per-frame", "shared"])
def test_adversarial_clips_stay_within_eps_in_uint8(
    student: StudentModel,
    clips_and_labels: tuple[np.ndarray, np.ndarray],
    perturbation: str,
) -> None:
    clips, labels = clips_and_labels
    clips = clips.copy()
    clips[:, :, :4] = 255  # saturated rows: the perturbation must clip, not wrap
    clips[:, :, -4:] = 0
    options = PGDOptions(eps=2.5, steps=4, step_size=1.5, perturbation=perturbation)  # type: ignore[arg-type]
    adversarial = pgd_linf(student_logits_fn(student), clips, labels, options, batch_size=3)
    assert adversarial.dtype == np.uint8 and adversarial.shape == clips.shape
    change = adversarial.astype(np.int16) - clips.astype(np.int16)
    assert integer_radius(2.5) == 2
    assert np.abs(change).max() == 2  # floor(eps), reached
    assert (change != 0).mean() > 0.5


def test_shared_perturbation_is_one_pattern_for_every_frame(
    student: StudentModel, clips_and_labels: tuple[np.ndarray, np.ndarray]
) -> None:
    clips, labels = clips_and_labels
    assert perturbation_shape(clips.shape, "shared") == (8, 1, 32, 32, 3)
    assert perturbation_shape(clips.shape, "per-frame") == clips.shape
    fn = student_logits_fn(student)
    # Where no frame is within eps of 0 or 255, clipping never bites.
    free = ((clips >= 4) & (clips <= 251)).all(axis=1)  # N H W 3
    for perturbation, same_in_time in (("shared", True), ("per-frame", False)):
        options = PGDOptions(eps=4, steps=3, perturbation=perturbation)  # type: ignore[arg-type]
        change = pgd_linf(fn, clips, labels, options).astype(np.int16) - clips
        equal = (change == change[:, :1]).all(axis=1)  # N H W 3: same change in every frame
        assert free.mean() > 0.5
        assert equal[free].all() == same_in_time
        if not same_in_time:
            assert equal[free].mean() < 0.5


@pytest.mark.parametrize("perturbation", ["per-frame", "shared"])
def test_sign_noise_moves_every_pixel_by_exactly_eps(
    clips_and_labels: tuple[np.ndarray, np.ndarray], perturbation: str
) -> None:
    clips, _ = clips_and_labels
    noisy = sign_noise(clips, 4.9, perturbation, np.random.default_rng(3))  # type: ignore[arg-type]
    change = noisy.astype(np.int16) - clips
    inside = (clips >= 4) & (clips <= 251)
    assert np.array_equal(np.abs(change[inside]), np.full(inside.sum(), 4))
    assert 0.45 < (change[inside] > 0).mean() < 0.55
    assert np.abs(change).max() == 4
    free = inside.all(axis=1)
    assert (change == change[:, :1]).all(axis=1)[free].all() == (perturbation == "shared")


def test_options_are_checked() -> None:
    for bad in (
        {"eps": 0.5},
        {"eps": 300},
        {"eps": float("nan")},
        {"eps": 8, "steps": 0},
        {"eps": 8, "step_size": -1},
        {"eps": 8, "perturbation": "per-pixel"},
        {"eps": 8, "momentum": -1.0},
    ):
        with pytest.raises(ValueError):
            PGDOptions(**bad)
    assert PGDOptions(eps=8, steps=10).step == pytest.approx(2.0)
    assert PGDOptions(eps=8).to_dict()["eps_fraction"] == pytest.approx(8 / 255)


def test_flip_rates_and_the_floored_ratio() -> None:
    true = np.array([0, 1, 2, 3, 4])
    eligible = np.array([True, True, True, True, False])
    attack = flip_rate(eligible, true, np.array([1, 1, 0, 0, 0]))  # 3 of 4 eligible flipped
    assert (attack.eligible, attack.flipped, attack.rate) == (4, 3, 0.75)
    noise = flip_rate(eligible, true, np.array([0, 1, 2, 0, 9]))
    assert ratio_vs_control(attack, noise) == {"ratio": 3.0, "control_floored": False}
    none = flip_rate(eligible, true, true)
    assert ratio_vs_control(attack, none) == {"ratio": 3.0, "control_floored": True}
    assert flip_rate(np.zeros(5, bool), true, true).rate is None
