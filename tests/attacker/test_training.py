"""Training on a transfer set: every loss trains, checkpoints resume, exports reload."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from attacker.data import TransferManifest, TransferSet, TransferSetWriter
from attacker.eval.fidelity import EvalSet, evaluate, student_logits
from attacker.students import (
    StudentPreprocessing,
    create_student,
    export_student,
    load_exported_student,
)
from attacker.train.loop import TrainSettings, train_student
from attacker.train.losses import build_loss
from shared.schemas import OutputMode
from shared.synthactions import SynthActions

CLASSES = 4
PREP = StudentPreprocessing(frames=8, height=16, width=16)


def _result(mode: OutputMode, probs: np.ndarray) -> dict[str, object]:
    top = int(probs.argmax())
    result: dict[str, object] = {"index": top, "label": f"c{top}"}
    if mode is OutputMode.PROBS:
        result["probs"] = probs.tolist()
    elif mode is OutputMode.LOGITS:
        result["logits"] = np.log(probs).tolist()
    elif mode is OutputMode.TOPK:
        order = np.argsort(-probs)[:2]
        result["topk"] = [
            {"index": int(i), "label": f"c{i}", "score": float(probs[i])} for i in order
        ]
    return result


def _transfer(root: Path, mode: OutputMode, n: int = 48) -> TransferSet:
    """A teacher that answers with the SynthActions label of the clip (first 4 classes)."""
    data = SynthActions(seed=5, frames=8, height=16, width=16)
    manifest = TransferManifest(
        victim={},
        output=mode.value,
        labels=[f"c{i}" for i in range(CLASSES)],
        clip_shape=[8, 16, 16, 3],
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
                    recipe={"i": i},
                    result=_result(mode, probs),
                    true_label=label,
                    paid=True,
                )
            i += 1
    return TransferSet(root)


def _student() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_student(
        "tiny3d", num_classes=CLASSES, preprocessing=PREP, labels=[f"c{i}" for i in range(CLASSES)]
    )


@pytest.mark.parametrize(
    ("loss", "mode", "params"),
    [
        ("kl", OutputMode.PROBS, {"temperature": 2.0}),
        ("kl", OutputMode.LOGITS, {}),
        ("soft_ce", OutputMode.PROBS, {}),
        ("hard_ce", OutputMode.LABEL, {}),
        ("topk", OutputMode.TOPK, {}),
        ("condi_sr", OutputMode.PROBS, {}),
        ("hard_ce", OutputMode.LABEL, {"true_label_weight": 0.5}),
    ],
)
def test_every_loss_trains_a_student(
    loss: str, mode: OutputMode, params: dict[str, float], tmp_path: Path
) -> None:
    transfer = _transfer(tmp_path, mode)
    student = _student()
    before = [p.detach().clone() for p in student.parameters()]
    result = train_student(
        student,
        transfer,
        build_loss(loss, mode, **params),
        TrainSettings(epochs=2, batch_size=16, warmup_steps=1),
        show_progress=False,
    )
    assert result.steps == 6 and all(np.isfinite(h["loss"]) for h in result.history)
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters(), strict=True))


@pytest.mark.parametrize("mode", [OutputMode.PROBS, OutputMode.TOPK, OutputMode.LABEL])
def test_mixup_trains_and_changes_what_is_learnt(mode: OutputMode, tmp_path: Path) -> None:
    transfer = _transfer(tmp_path, mode)
    loss = build_loss("auto", mode)
    trained = []
    for alpha in (0.0, 0.4):
        student = _student()
        result = train_student(
            student,
            transfer,
            loss,
            TrainSettings(epochs=2, batch_size=16, warmup_steps=1, mixup=alpha),
            show_progress=False,
        )
        assert result.steps == 6 and all(np.isfinite(h["loss"]) for h in result.history)
        trained.append([p.detach().clone() for p in student.parameters()])
    assert any(not torch.equal(a, b) for a, b in zip(*trained, strict=True))


def test_checkpoint_resumes_where_it_stopped(tmp_path: Path) -> None:
    transfer = _transfer(tmp_path / "t", OutputMode.PROBS)
    checkpoint = tmp_path / "ckpt.pt"
    loss = build_loss("kl", OutputMode.PROBS)
    first = train_student(
        _student(),
        transfer,
        loss,
        TrainSettings(epochs=2, batch_size=16),
        checkpoint=checkpoint,
        fingerprint="a",
        show_progress=False,
    )
    resumed = train_student(
        _student(),
        transfer,
        loss,
        TrainSettings(epochs=3, batch_size=16),
        checkpoint=checkpoint,
        fingerprint="a",
        show_progress=False,
    )
    other = train_student(
        _student(),
        transfer,
        loss,
        TrainSettings(epochs=1, batch_size=16),
        checkpoint=checkpoint,
        fingerprint="b",
        show_progress=False,
    )
    assert first.resumed_from_epoch == 0 and len(first.history) == 2
    assert resumed.resumed_from_epoch == 2 and len(resumed.history) == 1
    assert other.resumed_from_epoch == 0  # a different run's checkpoint is not reused


def test_export_reload_gives_the_same_predictions(tmp_path: Path) -> None:
    transfer = _transfer(tmp_path / "t", OutputMode.PROBS)
    student = _student()
    train_student(
        student,
        transfer,
        build_loss("kl", OutputMode.PROBS),
        TrainSettings(epochs=1, batch_size=16),
        show_progress=False,
    )
    clips, labels = SynthActions(seed=9, frames=8, height=16, width=16).batch(0, 12)
    export_student(student, tmp_path / "export")
    reloaded = load_exported_student(tmp_path / "export")
    np.testing.assert_allclose(
        student_logits(reloaded, clips), student_logits(student, clips), atol=1e-5
    )
    eval_set = EvalSet(clips, labels % CLASSES, labels)
    assert evaluate(reloaded, eval_set) == evaluate(student, eval_set)
