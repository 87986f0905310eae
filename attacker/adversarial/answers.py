"""The victim's top-1 answers to a batch of clips, paid through the Collector and the answer
cache: a clip seen before (by this or any earlier run on the same key) costs nothing, a clip that
appears twice is paid once, and the budget is checked before the first query is sent."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from attacker.client import VictimClient
from attacker.collect import AnswerCache, Collector, CollectStats, MemorySink
from attacker.sources import QueryClip
from shared.hashing import batch_hashes


class InsufficientBudget(ValueError):
    """The key cannot pay for the clips the answer cache does not hold (nothing was sent)."""


@dataclass(frozen=True)
class VictimAnswers:
    top1: np.ndarray  # (N,) int64: the victim's top-1 for every clip asked about
    distinct: int  # distinct clips among them
    paid: int  # queries charged for them now
    cache_hits: int  # distinct clips answered from the cache
    requests: int
    stopped_by: str


async def victim_top1(
    clips: np.ndarray,
    *,
    client: VictimClient,
    cache: AnswerCache,
    batch_clips: int = 64,
    concurrency: int = 2,
    show_progress: bool = False,
) -> VictimAnswers:
    """Top-1 of every clip (N, T, H, W, 3); raises :class:`InsufficientBudget` before paying
    anything when the key's remaining budget cannot cover the uncached distinct clips."""
    hashes = batch_hashes(clips)
    first: dict[str, int] = {}
    for row, clip_hash in enumerate(hashes):
        first.setdefault(clip_hash, row)
    distinct = list(first.values())
    cached = await cache.get_many([hashes[row] for row in distinct])
    misses = sum(answer is None for answer in cached)
    remaining = (await client.budget()).remaining
    if misses > remaining:
        raise InsufficientBudget(
            f"{misses} queries needed ({len(distinct)} distinct clips, "
            f"{len(distinct) - misses} already paid for), the key has {remaining} left"
        )
    bar = tqdm(total=len(distinct), desc="victim answers", unit="clip", disable=not show_progress)

    def progress(stats: CollectStats) -> None:
        bar.update(stats.clips - bar.n)
        bar.set_postfix(paid=stats.paid, cached=stats.cache_hits)

    sink = MemorySink()
    collector = Collector(
        client=client,
        cache=cache,
        writer=sink,
        target_clips=len(distinct),
        paid_allowance=misses,
        batch_clips=batch_clips,
        concurrency=concurrency,
        progress=progress,
    )

    def queries() -> Iterator[QueryClip]:
        for row in distinct:
            yield QueryClip(clip=clips[row], recipe={"source": "transfer", "row": row})

    try:
        stats = await collector.run(queries())
    finally:
        bar.close()
    if len(sink.results) < len(distinct):
        raise ValueError(
            f"the victim answered {len(sink.results)} of {len(distinct)} clips "
            f"(stopped: {stats.stopped_by}); paid answers are cached, rerun to finish"
        )
    by_hash = {hashes[row]: int(r["index"]) for row, r in zip(distinct, sink.results, strict=True)}
    return VictimAnswers(
        top1=np.array([by_hash[h] for h in hashes], dtype=np.int64),
        distinct=len(distinct),
        paid=stats.paid,
        cache_hits=stats.cache_hits,
        requests=stats.requests,
        stopped_by=stats.stopped_by,
    )
