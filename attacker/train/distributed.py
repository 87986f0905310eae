"""Distributed data-parallel training under ``torchrun``: one process per device, DDP.

:func:`distributed_from_env` reads what ``torchrun`` sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and joins the process group: NCCL with one GPU
per process when CUDA is available, gloo on CPU. Without those variables it yields ``None`` and
callers train in one process as before. ``train_student(..., distributed=ctx)`` then:

- shards each epoch's shuffled order across ranks (``TransferDataset(rank=, world_size=)``),
  ``TrainSettings.batch_size`` being the *global* batch (each rank takes its share), so the
  number of steps and the learning-rate schedule are those of a single-process run;
- wraps the model in :class:`~torch.nn.parallel.DistributedDataParallel` (gradients averaged
  every step, so the replicas stay identical);
- shows the progress bar and writes checkpoints on the main rank only, and reports losses
  averaged over all ranks.

BatchNorm: on CUDA the student's BatchNorm layers become ``nn.SyncBatchNorm`` for training
(statistics over the global batch) and are put back afterwards. PyTorch's SyncBatchNorm refuses
CPU tensors, so on CPU each rank normalises with its own batch's statistics; DDP copies the main
rank's running statistics to the others before every forward, and once more at the end, so every
replica (and the export) holds the main rank's buffers.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "DistributedContext",
    "distributed_from_env",
    "launched_by_torchrun",
    "state_checksum",
]

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    """Whether the environment carries torchrun's variables."""
    return all(name in os.environ for name in _TORCHRUN_VARS)


@dataclass
class DistributedContext:
    """This process's place in the process group, and the collectives training needs."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str
    _swapped: list[tuple[nn.Module, str, nn.Module]] = field(default_factory=list, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local_batch_size(self, global_batch_size: int) -> int:
        """This rank's share of a global batch (rounded up)."""
        return -(-global_batch_size // self.world_size)

    def wrap(self, model: nn.Module) -> DistributedDataParallel:
        """Move ``model`` to this rank's device and wrap it in DDP (SyncBatchNorm on CUDA).

        DDP copies the main rank's parameters and buffers to every rank here. Call
        :meth:`unwrap` after training.
        """
        model.to(self.device)
        if self.device.type == "cuda":
            self._swapped.extend(_swap_in_sync_batchnorm(model))
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def unwrap(self, model: nn.Module) -> None:
        """Put back the original BatchNorm layers and give every rank the main rank's buffers."""
        for parent, name, original in reversed(self._swapped):
            setattr(parent, name, original)  # same parameter and buffer tensors: trained state
        self._swapped.clear()
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum of ``values`` over all ranks (every rank gets the result)."""
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self._collective_device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return [float(v) for v in tensor.cpu()]

    def broadcast_float(self, value: float | None) -> float | None:
        """The main rank's ``value`` on every rank (``None`` stays ``None``)."""
        tensor = torch.tensor(
            [0.0 if value is None else 1.0, 0.0 if value is None else float(value)],
            dtype=torch.float64,
            device=self._collective_device,
        )
        dist.broadcast(tensor, src=0)
        return float(tensor[1]) if bool(tensor[0]) else None

    def agree(self, value: int, what: str) -> None:
        """Raise on every rank unless all ranks hold the same ``value``."""
        tensor = torch.tensor([value, -value], dtype=torch.int64, device=self._collective_device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        if int(tensor[0]) != -int(tensor[1]):
            raise RuntimeError(
                f"ranks disagree on {what}: from {-int(tensor[1])} to {int(tensor[0])} "
                "(is the checkpoint on a filesystem every rank sees?)"
            )

    def gather(self, value: object) -> list[object]:
        """``value`` from every rank, in rank order (any picklable object)."""
        out: list[object] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def barrier(self) -> None:
        dist.barrier()

    @property
    def _collective_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")


@contextmanager
def distributed_from_env() -> Iterator[DistributedContext | None]:
    """Join the process group torchrun describes; ``None`` when not launched by torchrun.

    NCCL on ``cuda:LOCAL_RANK`` when CUDA is available (hide GPUs with
    ``CUDA_VISIBLE_DEVICES=""`` to force CPU), gloo on CPU otherwise. The group is destroyed on
    exit.
    """
    if not launched_by_torchrun():
        yield None
        return
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        device, backend = torch.device("cuda", local_rank), "nccl"
        torch.cuda.set_device(device)
    else:
        device, backend = torch.device("cpu"), "gloo"
    dist.init_process_group(backend)
    try:
        yield DistributedContext(
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            local_rank=local_rank,
            device=device,
            backend=backend,
        )
    finally:
        dist.destroy_process_group()


def state_checksum(model: nn.Module) -> str:
    """A digest of the model's state dict (parameters and buffers, exact bytes, CPU)."""
    digest = hashlib.blake2b(digest_size=16)
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(
            value.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        )
    return digest.hexdigest()


def _swap_in_sync_batchnorm(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """Replace every BatchNorm child with a SyncBatchNorm sharing its parameters and buffers."""
    targets: list[tuple[nn.Module, str, nn.Module]] = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, nn.modules.batchnorm._BatchNorm)
        and not isinstance(child, nn.SyncBatchNorm)
    ]
    for parent, name, child in targets:
        setattr(parent, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
    return targets
