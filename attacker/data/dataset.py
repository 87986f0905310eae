"""The transfer set as a streaming PyTorch dataset: one shard in memory at a time."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset

from attacker.data.transfer_set import TransferRecord, TransferSet


@dataclass(frozen=True)
class TransferSample:
    clip: np.ndarray  # uint8 (T, H, W, 3)
    result: dict[str, Any]
    true_label: int | None


@dataclass(frozen=True)
class TransferBatch:
    clips: torch.Tensor  # uint8 (B, T, H, W, 3)
    results: list[dict[str, Any]]
    true_labels: list[int | None]


def shard_indices(count: int, *, rank: int, world_size: int) -> list[int]:
    """This rank's positions in a sequence of ``count`` items shared by ``world_size`` ranks.

    Rank ``r`` takes positions ``r, r + world_size, r + 2 * world_size, ...``; the sequence is
    padded by wrapping round to its start so every rank gets ``ceil(count / world_size)``
    positions (equal batch counts: DDP never waits for a rank that ran out). The ranks' positions
    are disjoint before padding and together cover every position; at most ``world_size - 1``
    of the first positions appear twice. ``world_size == 1`` gives ``range(count)``.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of size {world_size}")
    if count <= 0:
        return []
    per_rank = -(-count // world_size)
    return [(rank + world_size * j) % count for j in range(per_rank)]


class TransferDataset(IterableDataset[TransferSample]):
    """Samples of the first ``limit`` records (all by default).

    With ``shuffle``, each epoch visits shards in a new order and rows within a shard in a new
    order (seeded by ``seed`` and the epoch set with :meth:`set_epoch`).

    With ``world_size > 1`` (distributed training), every rank computes the same epoch order and
    iterates only its part of it (:func:`shard_indices`): ``len()`` is the per-rank count.
    """

    def __init__(
        self,
        transfer: TransferSet,
        *,
        limit: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        shard_indices(0, rank=rank, world_size=world_size)  # validates rank and world_size
        self.transfer = transfer
        self.limit = len(transfer) if limit is None else min(limit, len(transfer))
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.limit // self.world_size)

    def epoch_records(self) -> list[TransferRecord]:
        """This rank's records of the current epoch, in the order :meth:`__iter__` yields them."""
        rng = np.random.default_rng([self.seed, self.epoch])
        groups = self.transfer.records_by_shard(self.limit)
        shards = list(groups)
        if self.shuffle:
            rng.shuffle(shards)
        order: list[TransferRecord] = []
        for shard in shards:
            records = list(groups[shard])
            rows = rng.permutation(len(records)) if self.shuffle else range(len(records))
            order.extend(records[int(i)] for i in rows)
        mine = shard_indices(len(order), rank=self.rank, world_size=self.world_size)
        return [order[i] for i in mine]

    def __iter__(self) -> Iterator[TransferSample]:
        current, clips = -1, np.empty(0)
        for record in self.epoch_records():
            if record.shard != current:  # one shard in memory at a time
                current, clips = record.shard, self.transfer.load_shard(record.shard)
            yield TransferSample(clips[record.row], record.result, record.true_label)


def collate(samples: list[TransferSample]) -> TransferBatch:
    return TransferBatch(
        clips=torch.from_numpy(np.stack([s.clip for s in samples])),
        results=[s.result for s in samples],
        true_labels=[s.true_label for s in samples],
    )
