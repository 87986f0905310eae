"""Process settings for training on the CPU: torch threads and malloc's reuse of freed memory."""

from __future__ import annotations

import torch

from shared.memory import reuse_freed_memory


def prepare_training_process(threads: int) -> None:
    """``threads`` torch threads (0 keeps torch's choice), and freed memory kept for reuse: a
    training step frees and allocates the same large activations every step, which otherwise
    page-fault afresh (the deeper student at batch 64: 40,000-61,000 faults and 6-13% of a
    step's CPU, bench/malloc_reuse.py). Process-wide and idempotent."""
    reuse_freed_memory()
    if threads > 0:
        torch.set_num_threads(threads)
