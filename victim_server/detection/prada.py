"""PRADA as a detector plug-in: the reference logic (``shared.detection.prada``) over one
embedding of the clips, state in a :class:`PradaStore`.

Two embeddings are offered:

* ``prada`` -- the victim's own penultimate features (the defender owns the model: the pooled
  activations before the head come from the same forward pass as the answer, at no extra
  cost). L2 distances in that space, as PRADA measures them in whatever space it is given.
* ``prada_stats`` -- the seven quantised "naturalness" statistics of
  ``shared.detection.embedding`` (computed from the clips; the attacker's stealth mode mimics it).
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import numpy as np

from shared.detection import NaturalnessEmbedding, PradaConfig
from victim_server.detection.base import DetectorUnavailable, Observation, Verdict
from victim_server.detection.store import PradaStore

__all__ = ["PradaDetector", "feature_embedding", "statistics_embedding"]

Embed = Callable[[Observation], np.ndarray]


def feature_embedding(batch: Observation) -> np.ndarray:
    if batch.features is None:
        raise DetectorUnavailable("the served model exposes no penultimate features")
    return np.asarray(batch.features, dtype=np.float32)


def statistics_embedding(embedding: NaturalnessEmbedding) -> Embed:
    def embed(batch: Observation) -> np.ndarray:
        return embedding(batch.clips)

    return embed


class PradaDetector:
    def __init__(
        self,
        name: str,
        store: PradaStore,
        embed: Embed,
        *,
        max_set: int,
        available: str | None = None,
    ) -> None:
        self.name = name
        self.store = store
        self._embed = embed
        self._max_set = max_set
        self._unavailable = available  # why it cannot run here, or None

    def check(self) -> None:
        if self._unavailable is not None:
            raise DetectorUnavailable(self._unavailable)

    async def observe(self, key_id: str, batch: Observation) -> Verdict:
        self.check()
        vectors = await anyio.to_thread.run_sync(self._embed, batch)
        config = PradaConfig(delta=batch.delta, max_set=self._max_set)
        return await self.store.observe(key_id, config, vectors, batch.labels)

    async def status(self, key_id: str) -> Verdict:
        return await self.store.status(key_id)

    async def reset(self, key_id: str) -> None:
        await self.store.reset(key_id)
