"""Pre-training on the source's own recipes (attacker/train/pretext.py): the student learns to read
the motion factors off clips it never paid for, and the weights are cached by what made them."""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from attacker.sources import ClipShape, parse_source_config, recipe_factors
from attacker.students import StudentModel, StudentPreprocessing, create_student
from attacker.train.pretext import (
    PretextSettings,
    draw_factor_clips,
    pretrain_on_recipes,
    pretrain_student,
)

SHAPE = ClipShape(8, 16, 16)
CAMERA = parse_source_config({"kind": "stacked_affine"})
DIRECTIONS = (
    "camera_zooms_in",
    "camera_turns_clockwise",
    "camera_moves_right",
    "camera_moves_down",
)


def _student(seed: int = 0) -> StudentModel:
    torch.manual_seed(seed)
    return create_student(
        "tiny3d",
        num_classes=4,
        preprocessing=StudentPreprocessing(8, 16, 16),
        widths=[8, 16, 32, 32],
    )


def test_the_student_learns_to_read_the_factors_off_held_out_clips() -> None:
    torch.set_num_threads(1)
    data = draw_factor_clips(CAMERA, shape=SHAPE, seed=0, clips=3000, show_progress=False)
    settings = PretextSettings(steps=400, clips=3000, batch_size=32, lr=3e-3, warmup_steps=10)
    untrained = pretrain_student(
        _student(), data, PretextSettings(steps=1, clips=3000, batch_size=32), show_progress=False
    )
    trained = pretrain_student(_student(), data, settings, show_progress=False)
    before = statistics.fmean(untrained.factor_accuracy[f] for f in DIRECTIONS)
    after = statistics.fmean(trained.factor_accuracy[f] for f in DIRECTIONS)
    # Which way the camera zooms, turns and moves: chance is 0.5.
    assert after >= 0.7 and after >= before + 0.2, (before, after)
    assert trained.steps == 400 and trained.clips == 3000 and not trained.cached


def test_natural_clips_of_a_mix_are_left_out() -> None:
    mix = parse_source_config(
        {
            "kind": "mix",
            "parts": [
                {"source": {"kind": "synthactions", "seed": 1, "labelled": True}, "weight": 3},
                {"source": {"kind": "stacked_affine", "layered": 0.5}, "weight": 1},
            ],
        }
    )
    data = draw_factor_clips(mix, shape=SHAPE, seed=0, clips=12, show_progress=False)
    assert data.clips.shape == (12, *SHAPE.array_shape)
    assert data.targets.shape == (12, len(data.names))
    assert (data.targets.max(axis=1) >= 0).all()  # every clip has some factor
    layered = data.targets[:, data.names.index("layered")]
    assert set(layered.tolist()) <= {0, 1}


def test_pretraining_clips_are_not_the_paid_stream() -> None:
    from attacker.sources import build_source

    data = draw_factor_clips(CAMERA, shape=SHAPE, seed=0, clips=4, show_progress=False)
    paid = build_source(CAMERA, shape=SHAPE, seed=0)
    first = next(iter(paid))
    assert not any((clip == first.clip).all() for clip in data.clips)
    assert recipe_factors(first.recipe)  # the paid stream's clips have factors too


def test_the_cache_returns_the_same_weights_and_keys_on_what_made_them(tmp_path: Path) -> None:
    settings = PretextSettings(steps=3, clips=40, batch_size=8)

    def run(student: StudentModel, seed: int = 0) -> bool:
        result = pretrain_on_recipes(
            student,
            CAMERA,
            shape=SHAPE,
            settings=PretextSettings(**{**settings.__dict__, "seed": seed}),
            cache=tmp_path,
            show_progress=False,
        )
        return result.cached

    first, second = _student(), _student()
    assert run(first) is False
    assert run(second) is True
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert run(_student(), seed=1) is False  # another seed: other clips, other weights
    assert run(_student(seed=5)) is False  # another initial student
    assert len(list(tmp_path.glob("pretext-*.pt"))) == 3
