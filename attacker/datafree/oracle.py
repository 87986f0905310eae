"""The victim as the data-free loop sees it: a batch of uint8 clips in, the answers out, every
clip through the same path as any other query (content hash -> answer cache -> budget-checked
HTTP for misses only -> transfer set).

One :class:`PaidOracle` spans the whole attack: it counts answered clips against the run's
target and paid clips against its allowance, so the victim's spent total equals ``paid``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attacker.client import VictimClient
from attacker.collect import AnswerCache, Collector, CollectStats, RecordSink
from attacker.sources import QueryClip

__all__ = ["OracleAnswers", "PaidOracle"]

_SUMMED = ("clips", "paid", "cache_hits", "requests", "retries")
_EXTRA_SUMMED = ("replayed", "unanswered")


@dataclass
class OracleAnswers:
    """The answers to a prefix of the clips asked (all of them unless the run ran out)."""

    results: list[dict[str, Any]]
    complete: bool


@dataclass
class _TeeSink:
    """Forwards every record to the transfer set and keeps the answers for the caller."""

    writer: RecordSink
    results: list[dict[str, Any]] = field(default_factory=list)

    def append(
        self,
        clip: np.ndarray,
        *,
        clip_hash: str,
        recipe: dict[str, Any],
        result: dict[str, Any],
        true_label: int | None,
        paid: bool,
    ) -> None:
        self.writer.append(
            clip, clip_hash=clip_hash, recipe=recipe, result=result, true_label=None, paid=paid
        )
        self.results.append(result)


class PaidOracle:
    def __init__(
        self,
        *,
        client: VictimClient,
        cache: AnswerCache,
        writer: RecordSink,
        target_clips: int,
        paid_allowance: int,
        batch_clips: int,
        concurrency: int,
        progress: Callable[[CollectStats], None] | None = None,
    ) -> None:
        self.client = client
        self.cache = cache
        self.writer = writer
        self.target = target_clips
        self.allowance = paid_allowance
        self.batch_clips = batch_clips
        self.concurrency = concurrency
        self.progress = progress
        self.stats = CollectStats()
        self.stopped = False  # the target, the allowance or the victim ended the run

    @property
    def remaining(self) -> int:
        """Clips the run may still have answered (paid or cached)."""
        return 0 if self.stopped else max(0, self.target - self.stats.clips)

    async def answer(self, clips: np.ndarray, recipes: Sequence[dict[str, Any]]) -> OracleAnswers:
        """Answers to ``clips`` (uint8 N x T x H x W x 3), in order; a shorter list when the run's
        target, allowance or the victim stops it partway (then :attr:`stopped` is set)."""
        if len(recipes) != len(clips):
            raise ValueError(f"{len(clips)} clips but {len(recipes)} recipes")
        want = min(len(clips), self.remaining)
        sink = _TeeSink(self.writer)
        if want > 0:
            collector = Collector(
                client=self.client,
                cache=self.cache,
                writer=sink,
                target_clips=want,
                paid_allowance=max(0, self.allowance - self.stats.paid),
                batch_clips=self.batch_clips,
                concurrency=self.concurrency,
            )
            queries = (
                QueryClip(clip=np.ascontiguousarray(clips[i]), recipe=dict(recipes[i]))
                for i in range(want)
            )
            self._merge(await collector.run(queries), paid_before=self.stats.paid)
        complete = len(sink.results) == len(clips)
        if not complete:
            self.stopped = True
            if self.stats.stopped_by == "target" and self.stats.clips < self.target:
                self.stats.stopped_by = "budget"
        if self.progress is not None:
            self.progress(self.stats)
        return OracleAnswers(sink.results, complete)

    def _merge(self, part: CollectStats, *, paid_before: int) -> None:
        if "blocked_after_paid" in part.extra:  # counted by this call's collector: make it total
            part.extra["blocked_after_paid"] += paid_before
        for name in _SUMMED:
            setattr(self.stats, name, getattr(self.stats, name) + getattr(part, name))
        self.stats.seconds = round(self.stats.seconds + part.seconds, 3)
        if part.stopped_by != "target":
            self.stats.stopped_by = part.stopped_by
        for key, value in part.extra.items():
            if key in _EXTRA_SUMMED:
                self.stats.extra[key] = self.stats.extra.get(key, 0) + value
            else:
                self.stats.extra.setdefault(key, value)
