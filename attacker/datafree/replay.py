"""Experience replay for the data-free student (MAZE, Kariyappa et al. 2021): the last
``capacity`` answered clips and their recovered logits, so the student can take extra steps on
answers it already paid for (no query) instead of seeing each generated clip once."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["ReplayBuffer"]


class ReplayBuffer:
    """A ring of uint8 clips (N, T, H, W, 3) and float targets (N, C), allocated on first use."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"replay capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._clips: Tensor | None = None
        self._targets: Tensor | None = None
        self._next = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, clips: Tensor, targets: Tensor) -> None:
        """Keep ``clips`` (uint8) and their ``targets``, overwriting the oldest when full."""
        if clips.dtype != torch.uint8:
            raise TypeError(f"replay keeps uint8 clips, got {clips.dtype}")
        if len(clips) != len(targets):
            raise ValueError(f"{len(clips)} clips but {len(targets)} targets")
        if self._clips is None or self._targets is None:
            self._clips = torch.empty((self.capacity, *clips.shape[1:]), dtype=torch.uint8)
            self._targets = torch.empty((self.capacity, *targets.shape[1:]), dtype=torch.float32)
        clips, targets = clips[-self.capacity :], targets[-self.capacity :]
        rows = (self._next + torch.arange(len(clips))) % self.capacity
        self._clips[rows] = clips
        self._targets[rows] = targets.detach().to(torch.float32)
        self._next = int((self._next + len(clips)) % self.capacity)
        self._size = min(self.capacity, self._size + len(clips))

    def sample(self, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``count`` random rows (with replacement) as (uint8 clips, targets)."""
        if self._clips is None or self._targets is None or self._size == 0:
            raise ValueError("the replay buffer is empty")
        rows = torch.randint(0, self._size, (count,), generator=generator)
        return self._clips[rows], self._targets[rows]
