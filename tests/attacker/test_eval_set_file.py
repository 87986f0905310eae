"""The run keeps its labelled evaluation clips as a plain .npz that later commands read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from attacker.eval.fidelity import EvalSet


def test_eval_set_round_trips_through_npz(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    original = EvalSet(
        clips=rng.integers(0, 256, (5, 4, 8, 8, 3), dtype=np.uint8),
        victim_top1=np.array([0, 3, 1, 1, 2]),
        true_labels=np.array([0, -1, 1, 2, 2]),
        paid=5,
    )
    loaded = EvalSet.load(original.save(tmp_path / "eval_set.npz"))
    assert np.array_equal(loaded.clips, original.clips)
    assert np.array_equal(loaded.victim_top1, original.victim_top1)
    assert np.array_equal(loaded.true_labels, original.true_labels)


def test_a_file_that_is_not_an_eval_set_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "other.npz"
    np.savez(path, something=np.zeros(3))
    with pytest.raises(ValueError, match="not an evaluation set"):
        EvalSet.load(path)
