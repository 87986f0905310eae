"""The transfer set: paid answers with their clips, on disk and as a streaming dataset."""

from attacker.data.dataset import TransferBatch, TransferDataset, TransferSample, collate
from attacker.data.transfer_set import (
    FORMAT_VERSION,
    TransferManifest,
    TransferRecord,
    TransferSet,
    TransferSetWriter,
)

__all__ = [
    "FORMAT_VERSION",
    "TransferBatch",
    "TransferDataset",
    "TransferManifest",
    "TransferRecord",
    "TransferSample",
    "TransferSet",
    "TransferSetWriter",
    "collate",
]
