"""The base of the prune package's context managers that watch a model's training forwards
without touching the training loop (``train_student`` makes one training-mode forward per
optimiser step): :class:`attacker.prune.rewind.StepSnapshot` and
:class:`attacker.prune.teacher.TeacherTerm`."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

from torch import nn

__all__ = ["TrainingForwardHook"]


class TrainingForwardHook:
    """While the ``with`` block is open, ``on_training_forward(module, args)`` runs before each
    forward the model makes in training mode (evaluation forwards are skipped); ``on_close``
    runs once the hook is removed."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._handle: Any = None

    def on_training_forward(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        raise NotImplementedError

    def on_close(self) -> None:
        """Called when the ``with`` block ends, after the hook is removed."""

    def _before_forward(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if module.training:
            self.on_training_forward(module, args)

    def __enter__(self) -> Self:
        self._handle = self.model.register_forward_pre_hook(self._before_forward)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._handle.remove()
        self.on_close()
