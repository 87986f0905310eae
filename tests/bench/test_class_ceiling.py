"""bench/class_ceiling.py weighs each class by the held-out clips the victim gives it: the
agreement it recomputes is the file's, and the ceiling keeps the named classes as they are."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from class_ceiling import ceiling_rows


def test_agreement_without_and_ceiling_weigh_classes_by_their_clips() -> None:
    counts = np.array([50, 30, 20])
    # Class 2 is weak (0.25). None (no held-out clip answered with the class, so in a real file
    # its count is 0) is read as agreed, never as a miss.
    results = {
        "attacks": {
            "ours": {
                "points": [
                    {"queries": 10, "class_agreement_mean": [0.0, 0.0, 0.0]},
                    {"queries": 20, "class_agreement_mean": [0.9, 0.8, 0.25]},
                ]
            },
            "peer": {"points": [{"queries": 20, "class_agreement_mean": [1.0, None, 0.5]}]},
        }
    }
    named = np.array([False, False, True])
    rows = {row[0]: row[1:] for row in ceiling_rows(results, counts, named)}
    queries, total, without, ceiling = rows["ours"]
    assert queries == 20
    assert total == pytest.approx((45 + 24 + 5) / 100)
    assert without == pytest.approx((45 + 24) / 80)
    assert ceiling == pytest.approx((80 + 5) / 100)
    assert rows["peer"][1] == pytest.approx((50 + 30 + 10) / 100)
    assert rows["peer"][3] == pytest.approx(rows["peer"][1])  # perfect elsewhere already
