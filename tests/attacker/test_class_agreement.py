"""Per-class agreement: which of the victim's classes a clone has learnt, in the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from attacker.eval.fidelity import EvalSet, class_agreement, fidelity_of
from attacker.eval.report import write_report


def test_agreement_is_measured_per_class_of_the_victims_answers() -> None:
    victim = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    student = np.array([0, 0, 0, 1, 1, 1, 0, 0, 0, 2])
    assert class_agreement(student, victim, 4) == (0.75, 1.0, 0.25, None)


def test_fidelity_carries_the_per_class_agreement() -> None:
    victim = np.array([0, 1, 1, 2])
    logits = np.eye(3, dtype=np.float32)[[0, 1, 2, 2]]  # wrong on the second class-1 clip
    clips = np.zeros((4, 2, 4, 4, 3), np.uint8)
    fidelity = fidelity_of(logits, EvalSet(clips, victim, np.full(4, -1)))
    assert fidelity.top1_agreement == 0.75
    assert fidelity.class_agreement == (1.0, 0.5, 1.0)
    assert fidelity.to_dict()["class_agreement"] == (1.0, 0.5, 1.0)


def test_the_report_names_the_classes_the_clone_agrees_on_least(tmp_path: Path) -> None:
    point = {
        "queries": 64,
        "top1_agreement": 0.6,
        "top5_agreement": 0.9,
        "accuracy": None,
        "class_agreement": [0.9, None, 0.1, 0.5],
    }
    report = {
        "name": "clone",
        "victim": {
            "url": "http://victim",
            "model": "m",
            "output": "probs",
            "top_k": None,
            "labels": ["walk", "run", "jump", "sit"],
        },
        "budget": 64,
        "source": "stacked_affine",
        "loss": "kl",
        "student": {"architecture": "tiny3d", "export": str(tmp_path / "student")},
        "collect": {"clips": 64, "paid": 64, "cache_hits": 0, "retries": 0, "stopped_by": "budget"},
        "eval": {"clips": 16, "source": "synthactions", "victim_accuracy": 1.0},
        "points": [point],
        "final": point,
    }
    write_report(tmp_path, report)
    markdown = (tmp_path / "report.md").read_text()
    assert "agrees on least (at 64 queries" in markdown
    assert "jump 10.0%, sit 50.0%, walk 90.0%." in markdown  # worst first; run never answered
