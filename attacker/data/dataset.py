"""The transfer set as a streaming PyTorch dataset: one shard in memory at a time."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset

from attacker.data.transfer_set import TransferSet


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


class TransferDataset(IterableDataset[TransferSample]):
    """Samples of the first ``limit`` records (all by default).

    With ``shuffle``, each epoch visits shards in a new order and rows within a shard in a new
    order (seeded by ``seed`` and the epoch set with :meth:`set_epoch`).
    """

    def __init__(
        self,
        transfer: TransferSet,
        *,
        limit: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        self.transfer = transfer
        self.limit = len(transfer) if limit is None else min(limit, len(transfer))
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.limit

    def __iter__(self) -> Iterator[TransferSample]:
        rng = np.random.default_rng([self.seed, self.epoch])
        groups = self.transfer.records_by_shard(self.limit)
        shards = list(groups)
        if self.shuffle:
            rng.shuffle(shards)
        for shard in shards:
            clips = self.transfer.load_shard(shard)
            records = list(groups[shard])
            order = rng.permutation(len(records)) if self.shuffle else range(len(records))
            for i in order:
                record = records[int(i)]
                yield TransferSample(clips[record.row], record.result, record.true_label)


def collate(samples: list[TransferSample]) -> TransferBatch:
    return TransferBatch(
        clips=torch.from_numpy(np.stack([s.clip for s in samples])),
        results=[s.result for s in samples],
        true_labels=[s.true_label for s in samples],
    )
