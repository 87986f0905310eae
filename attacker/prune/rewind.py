"""Weight rewinding (Frankle et al., "Linear Mode Connectivity and the Lottery Ticket
Hypothesis", 2020): keep the weights a training run had after ``k`` optimiser steps, and after
each pruning round restart the surviving weights from them.

:class:`StepSnapshot` takes that copy without touching the training loop: it counts the model's
forward passes in training mode (``train_student`` makes one per optimiser step) and copies the
weights just before forward ``k + 1``, i.e. after ``k`` steps. ``k = 0`` keeps the weights the
run started from.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from attacker.prune.hooks import TrainingForwardHook
from attacker.prune.masks import apply_masks, effective_state, make_permanent

__all__ = ["StepSnapshot", "rewind"]

State = dict[str, torch.Tensor]


class StepSnapshot(TrainingForwardHook):
    """Context manager: ``state`` holds the model's weights after ``step`` training steps taken
    inside the ``with`` block (the last weights if fewer steps were taken)."""

    def __init__(self, model: nn.Module, step: int) -> None:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        super().__init__(model)
        self.step = step
        self.forwards = 0
        self._state: State | None = effective_state(model) if step == 0 else None

    def on_training_forward(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if self.forwards == self.step and self._state is None:
            self._state = effective_state(module)
        self.forwards += 1

    def on_close(self) -> None:
        if self._state is None:
            self._state = effective_state(self.model)

    @property
    def taken_at(self) -> int:
        """The step the snapshot holds (``step``, or the steps taken when there were fewer)."""
        return min(self.step, self.forwards)

    @property
    def state(self) -> State:
        if self._state is None:
            raise RuntimeError("the snapshot is taken when the with block ends")
        return self._state


def rewind(
    model: nn.Module, state: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]
) -> None:
    """Reset every weight, bias, norm parameter and buffer to ``state`` and hold ``masks``:
    the pruned weights are zero, the survivors have their rewound values."""
    make_permanent(model)
    model.load_state_dict(dict(state), strict=True)
    apply_masks(model, masks)
