"""Output modes: what each plan sees."""

from __future__ import annotations

import numpy as np

from shared.schemas import OutputMode
from victim_server.policy.outputs import build_results, softmax, top_k_indices

LABELS = [f"c{i}" for i in range(6)]
LOGITS = np.array([[0.1, 2.0, -1.0, 0.5, 1.5, 0.0], [3.0, 0.0, 0.0, 0.0, 0.0, 2.9]], np.float32)


def test_softmax_rows_sum_to_one_and_keep_order() -> None:
    probs = softmax(LOGITS)
    np.testing.assert_allclose(probs.sum(1), 1.0)
    assert (probs.argmax(1) == LOGITS.argmax(1)).all()


def test_top_k_is_sorted_descending() -> None:
    top = top_k_indices(LOGITS, 3)
    assert top[0].tolist() == [1, 4, 3]
    assert top[1, :2].tolist() == [0, 5]


def test_each_mode_reveals_only_its_part() -> None:
    probs = softmax(LOGITS)
    for mode in OutputMode:
        results = build_results(mode=mode, logits=LOGITS, probs=probs, labels=LABELS, top_k=3)
        first = results[0]
        assert first.index == 1 and first.label == "c1"
        present = {f for f in ("logits", "probs", "topk") if getattr(first, f) is not None}
        expected = {
            OutputMode.LOGITS: {"logits"},
            OutputMode.PROBS: {"probs"},
            OutputMode.TOPK: {"topk"},
            OutputMode.LABEL: set(),
        }[mode]
        assert present == expected
    topk = build_results(mode=OutputMode.TOPK, logits=None, probs=probs, labels=LABELS, top_k=3)[
        0
    ].topk
    assert topk is not None and [e.index for e in topk] == [1, 4, 3]
    assert topk[0].score >= topk[1].score >= topk[2].score
