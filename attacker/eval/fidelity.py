"""Fidelity (Jagielski et al., 2020): agreement of the student with the victim on held-out
clips; accuracy on true labels where they are known."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from attacker.students import StudentModel, student_preprocess


@dataclass(frozen=True)
class EvalSet:
    clips: np.ndarray  # uint8 (N, T, H, W, 3)
    victim_top1: np.ndarray  # (N,) int64, the victim's answer
    true_labels: np.ndarray  # (N,) int64, -1 where unknown
    paid: int = 0  # queries this run paid to label it (0 when all came from the cache)

    def __len__(self) -> int:
        return int(self.clips.shape[0])

    def save(self, path: Path) -> Path:
        """Write the labelled clips as ``.npz`` (no pickled objects), so later commands
        (``prune``, ``transfer``) measure agreement on the same clips without paying again."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            np.savez_compressed(
                handle,
                clips=self.clips,
                victim_top1=self.victim_top1,
                true_labels=self.true_labels,
            )
        return path

    @classmethod
    def load(cls, path: Path) -> EvalSet:
        try:
            with np.load(path, allow_pickle=False) as data:
                clips, top1, labels = data["clips"], data["victim_top1"], data["true_labels"]
        except (OSError, KeyError, ValueError) as exc:
            raise ValueError(f"{path} is not an evaluation set: {exc}") from None
        if clips.dtype != np.uint8 or clips.ndim != 5 or len(top1) != len(clips):
            raise ValueError(f"{path} is not an evaluation set: bad shapes or dtype")
        return cls(clips, top1.astype(np.int64), labels.astype(np.int64))


@dataclass(frozen=True)
class Fidelity:
    clips: int
    top1_agreement: float  # student top-1 == victim top-1
    top5_agreement: float  # victim top-1 within the student's top-5
    accuracy: float | None  # student top-1 == true label, over clips with a known label
    victim_accuracy: float | None  # the victim's own accuracy on the same clips
    # Per class of the victim's answers: top-1 agreement on the clips the victim puts in that
    # class (None where it puts none), i.e. which of the victim's classes the clone has learnt.
    class_agreement: tuple[float | None, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@torch.inference_mode()
def student_logits(model: StudentModel, clips: np.ndarray, *, batch_size: int = 128) -> np.ndarray:
    model.eval()
    config = model.student_config
    out = []
    for start in range(0, clips.shape[0], batch_size):
        x = student_preprocess(clips[start : start + batch_size], config.preprocessing)
        out.append(model(x).float().numpy())
    return np.concatenate(out) if out else np.empty((0, config.num_classes), np.float32)


def fidelity_of(logits: np.ndarray, eval_set: EvalSet) -> Fidelity:
    top5 = np.argsort(-logits, axis=1)[:, :5]
    top1 = top5[:, 0]
    known = eval_set.true_labels >= 0
    return Fidelity(
        clips=len(eval_set),
        top1_agreement=float((top1 == eval_set.victim_top1).mean()),
        top5_agreement=float((top5 == eval_set.victim_top1[:, None]).any(axis=1).mean()),
        accuracy=float((top1[known] == eval_set.true_labels[known]).mean())
        if known.any()
        else None,
        victim_accuracy=float((eval_set.victim_top1[known] == eval_set.true_labels[known]).mean())
        if known.any()
        else None,
        class_agreement=class_agreement(top1, eval_set.victim_top1, logits.shape[1]),
    )


def class_agreement(
    student_top1: np.ndarray, victim_top1: np.ndarray, classes: int
) -> tuple[float | None, ...]:
    """For each class ``c``: the share of the clips the victim answers with ``c`` that the
    student answers with ``c`` too (None for a class the victim never answered)."""
    agree = np.bincount(victim_top1[student_top1 == victim_top1], minlength=classes)[:classes]
    total = np.bincount(victim_top1, minlength=classes)[:classes]
    return tuple(round(float(a / n), 4) if n else None for a, n in zip(agree, total, strict=True))


def evaluate(model: StudentModel, eval_set: EvalSet) -> Fidelity:
    return fidelity_of(student_logits(model, eval_set.clips), eval_set)
