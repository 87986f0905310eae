"""SynthActions: deterministic, balanced, any shape, motion-defined classes, CLI output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shared.synthactions import CLASS_NAMES, NUM_CLASSES, SynthActions


def test_at_least_sixteen_motion_classes() -> None:
    assert NUM_CLASSES >= 16 and len(set(CLASS_NAMES)) == NUM_CLASSES
    assert {"move_left", "move_right", "rotate_clockwise", "zoom_in", "blink"} <= set(CLASS_NAMES)


def test_same_seed_same_clips_in_any_order() -> None:
    data = SynthActions(seed=3)
    forward, labels = data.batch(0, 8)
    again = np.stack([SynthActions(seed=3).clip(i) for i in reversed(range(8))])[::-1]
    np.testing.assert_array_equal(forward, again)
    np.testing.assert_array_equal(labels, SynthActions(seed=3).labels(0, 8))


def test_different_seeds_differ() -> None:
    a, _ = SynthActions(seed=1).batch(0, 4)
    b, _ = SynthActions(seed=2).batch(0, 4)
    assert not np.array_equal(a, b)


def test_labels_are_exactly_balanced_per_block() -> None:
    labels = SynthActions(seed=5).labels(0, NUM_CLASSES * 10)
    assert np.bincount(labels, minlength=NUM_CLASSES).tolist() == [10] * NUM_CLASSES
    for block in range(10):
        chunk = labels[block * NUM_CLASSES : (block + 1) * NUM_CLASSES]
        assert sorted(chunk.tolist()) == list(range(NUM_CLASSES))


@pytest.mark.parametrize(("frames", "height", "width"), [(8, 24, 40), (16, 32, 32), (32, 64, 48)])
def test_any_clip_shape(frames: int, height: int, width: int) -> None:
    clips, _ = SynthActions(seed=0, frames=frames, height=height, width=width).batch(0, 3)
    assert clips.shape == (3, frames, height, width, 3) and clips.dtype == np.uint8


def _centroid_track(clip: np.ndarray) -> np.ndarray:
    """x position of the pixels that change over the clip, per frame (the moving object)."""
    moving = np.abs(clip.astype(np.int16) - np.median(clip, axis=0)).sum(-1) > 60  # T H W
    xs = np.arange(clip.shape[2])[None, None, :]
    counts = moving.sum(axis=(1, 2))
    return np.asarray((moving * xs).sum(axis=(1, 2)) / np.maximum(counts, 1))


def test_classes_are_defined_by_motion_direction() -> None:
    """Left and right clips move their object the way their label says."""
    data = SynthActions(seed=11, difficulty=0.0)
    labels = data.labels(0, 64)
    right, left = CLASS_NAMES.index("move_right"), CLASS_NAMES.index("move_left")
    for index in np.flatnonzero((labels == right) | (labels == left)):
        track = _centroid_track(data.clip(int(index)))
        drift = track[-3:].mean() - track[:3].mean()
        assert (drift > 0) == (labels[index] == right), (index, drift)


def test_a_single_frame_carries_no_class_statistics() -> None:
    """Per-frame appearance statistics are drawn independently of the class."""
    data = SynthActions(seed=2)
    clips, labels = data.batch(0, NUM_CLASSES * 12)
    brightness = clips[:, 0].reshape(len(clips), -1).mean(axis=1)
    per_class = [brightness[labels == c].mean() for c in range(NUM_CLASSES)]
    assert np.std(per_class) < 0.5 * brightness.std()


def test_cli_writes_a_pickle_free_npz(tmp_path: Path) -> None:
    out = tmp_path / "clips.npz"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "shared.synthactions",
            "--seed",
            "4",
            "--n",
            "20",
            "--out",
            str(out),
            "--frames",
            "8",
            "--size",
            "24",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    with np.load(out, allow_pickle=False) as data:
        assert data["clips"].shape == (20, 8, 24, 24, 3)
        assert data["labels"].tolist() == SynthActions(seed=4).labels(0, 20).tolist()
        assert list(data["class_names"]) == list(CLASS_NAMES)
        expected, _ = SynthActions(seed=4, frames=8, height=24, width=24).batch(0, 20)
        np.testing.assert_array_equal(data["clips"], expected)


def test_cli_rejects_bad_arguments(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "shared.synthactions",
            "--seed",
            "-1",
            "--n",
            "2",
            "--out",
            str(tmp_path / "x.npz"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2 and result.stderr.startswith("error:")
