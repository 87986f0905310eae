"""This process's copies of SEAT rings, so a key's next request need not read its ring again.

A key's ring (the last ``ring`` query embeddings, in Redis) is 256 KiB. A process that wrote
the ring's last change knows what it holds: its copy is named by the ring's id (made when the
ring was started, so a reset ring is another ring) and the key's query count after that write.
The detector sends that name with its write, and Redis's script refuses the write when the ring
has moved on (another process wrote, or the key was reset): then the ring is read whole and the
write sent again, as without a copy. Copies are kept for the most recently used keys only.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

# 256 KiB each at 1,024 x 64 float32: at most 16 MiB per process
MAX_KEYS = 64


@dataclass
class RingCopy:
    ring_id: str
    queries: int  # the key's query count that ``vectors`` is the ring of
    vectors: np.ndarray  # (ring, dim) float32, slot = query % ring; rows past ``queries`` unset

    @property
    def name(self) -> str:
        """What the script compares with the ring's id and query count in Redis."""
        return f"{self.ring_id}:{self.queries}"

    def held(self) -> np.ndarray:
        """The embeddings the ring holds (its first ``queries`` slots until it is full)."""
        return self.vectors[: min(self.queries, len(self.vectors))]

    def advanced(self, written: np.ndarray) -> RingCopy:
        """This copy after ``written`` went in at the next slots (the script's own order)."""
        size = len(self.vectors)
        slots = (self.queries + np.arange(len(written))) % size
        self.vectors[slots] = written
        return RingCopy(self.ring_id, self.queries + len(written), self.vectors)


def ring_copy(ring_id: str, queries: int, blob: bytes, *, size: int, dim: int) -> RingCopy:
    """A writable copy of the ring as read from Redis (``blob`` may be shorter than full)."""
    vectors = np.zeros((size, dim), dtype=np.float32)
    stored = np.frombuffer(blob, dtype=np.float32).reshape(-1, dim)[:size]
    vectors[: len(stored)] = stored
    return RingCopy(ring_id, queries, vectors)


class RingCopies:
    """Least recently used copies, at most ``max_keys``."""

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self._copies: OrderedDict[str, RingCopy] = OrderedDict()
        self._max = max_keys

    def get(self, key_id: str) -> RingCopy | None:
        copy = self._copies.get(key_id)
        if copy is not None:
            self._copies.move_to_end(key_id)
        return copy

    def put(self, key_id: str, copy: RingCopy) -> None:
        self._copies[key_id] = copy
        self._copies.move_to_end(key_id)
        while len(self._copies) > self._max:
            self._copies.popitem(last=False)

    def drop(self, key_id: str) -> None:
        self._copies.pop(key_id, None)
