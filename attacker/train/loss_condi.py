"""ConDi-SR: confidence distillation with soft-relabelling, for grey-box (partly labelled) clips."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .loss_base import DistillLoss, check_logits, kl_rows, teacher_log_probs
from .loss_registry import register_loss
from .loss_targets import DistillTargets, Need, require

__all__ = ["ConfidenceDistillation"]

Confidence = Literal["hard", "soft"]


@register_loss("condi_sr")
class ConfidenceDistillation(DistillLoss):
    """ConDi-SR (confidence distillation with soft-relabelling): trust the victim where it is
    right, the ground truth where it is wrong, and soften the target where confidence is low.

    For clip i with victim distribution p_i (logits z_i when known), victim top-1 label v_i and
    true label y_i (``-1`` if unknown), base temperature T and ``alpha >= 0``:

    1. confidence ``c_i``: 1 if y_i is unknown; else ``1[v_i == y_i]`` (``confidence="hard"``)
       or ``p_i[y_i]`` at temperature 1 (``confidence="soft"``, a smoothed correctness);
    2. per-clip temperature ``T_i = T * (1 + alpha * (1 - c_i))``;
    3. tempered teacher ``q_i = softmax(z_i / T_i)`` (or ``p_i^(1/T_i)`` renormalised);
    4. soft-relabelled target ``t_i = c_i * q_i + (1 - c_i) * onehot(y_i)``;
    5. ``loss = mean_i T_i^2 * KL(t_i || softmax(s_i / T_i))``.

    On unlabelled clips (c = 1) this is exactly ``KLDistillation(T)``; on a labelled clip the
    victim got wrong with hard confidence (c = 0) it is ``T_i^2 * CE(s_i / T_i, y_i)`` with
    ``T_i = T (1 + alpha)``, i.e. plain cross-entropy on the true label when ``T = 1`` and
    ``alpha = 0``.

    Provenance: the name and the idea (the teacher's correctness as a confidence target; the
    temperature softened by confidence) are DESIGN §6's, attributed there to the
    confidence-distillation thesis used by the Inter-IIT video-extraction work. The formula above
    is the one implemented and tested here, written from that description, not from a reference
    implementation. A related published scheme is CCKD (Mishra & Sundaram, arXiv:2107.06993),
    which builds per-sample targets from the teacher's confidence in the correct class and adds
    a "self-regulation" step (dropping clips the student already fits) not implemented here.
    """

    need = Need.SOFT

    def __init__(
        self, temperature: float = 1.0, alpha: float = 1.0, *, confidence: Confidence = "hard"
    ) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not alpha >= 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        if confidence not in ("hard", "soft"):
            raise ValueError(f"confidence must be 'hard' or 'soft', got {confidence!r}")
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.confidence_kind: Confidence = confidence

    def confidence(self, targets: DistillTargets, *, dtype: torch.dtype | None = None) -> Tensor:
        """(B,) ``c_i`` as defined in the class docstring (1 where the true label is unknown)."""
        known = targets.known_true
        if targets.true_label is None:
            truth = torch.zeros_like(targets.label)
        else:
            truth = targets.true_label.clamp_min(0)
        if self.confidence_kind == "hard":
            labelled = (targets.label == truth).to(dtype or torch.get_default_dtype())
        else:
            probs = teacher_log_probs(targets, 1.0, dtype=dtype).exp()
            labelled = probs.gather(1, truth[:, None]).squeeze(1)
        return torch.where(known, labelled, torch.ones_like(labelled))

    def temperatures(self, confidence: Tensor) -> Tensor:
        """(B,) ``T_i = T * (1 + alpha * (1 - c_i))``."""
        return self.temperature * (1.0 + self.alpha * (1.0 - confidence))

    def forward(self, student_logits: Tensor, targets: DistillTargets) -> Tensor:
        require(targets, self.need, type(self).__name__)
        s = check_logits(student_logits, targets)
        c = self.confidence(targets, dtype=s.dtype).detach()  # B
        temps = self.temperatures(c)  # B
        teacher = teacher_log_probs(targets, temps[:, None], dtype=s.dtype).exp()  # B C
        if targets.true_label is None:
            target = teacher
        else:
            truth = F.one_hot(targets.true_label.clamp_min(0), s.shape[1]).to(s.dtype)
            target = c[:, None] * teacher + (1.0 - c[:, None]) * truth
        student = F.log_softmax(s / temps[:, None], dim=1)
        return (temps * temps * kl_rows(target, student)).mean()

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, alpha={self.alpha}, "
            f"confidence={self.confidence_kind!r}"
        )
