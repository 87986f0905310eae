"""Collect and train in rounds (``query.select``): draw a candidate pool locally (unpaid), score
it with the current student, pay only for the clips the strategy picks, train on, repeat.

Budget-exact like the plain collect stage (one Collector per round, the allowance carried over),
every answer cached before use, and resumable: a rerun first replays the clips the previous run
bought, round by round (their answers come from the cache, unpaid), and selects anew only after
them. The run's budget points are the round ends.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aioredis
import torch
from tqdm.auto import tqdm

from attacker.active import SelectConfig, SourceBandit, choose, round_sizes, score_pool
from attacker.client import ResponseCache, VictimClient, answer_identity
from attacker.collect import Collector, CollectStats
from attacker.config import AttackConfig
from attacker.data import TransferSet, TransferSetWriter
from attacker.data.replay import discard_previous, set_aside_previous
from attacker.sources import ClipShape, QueryClip, build_source
from attacker.sources.mix import MixSource
from attacker.stages.collect import clip_shape, transfer_manifest
from attacker.stages.train import ContinualTrainer, PointHook
from attacker.students import StudentModel
from shared.hashing import batch_hashes, clip_hash
from shared.schemas import ModelInfo

__all__ = ["collect_and_train_in_rounds"]

_SELECT_STREAM = 53  # seeds the strategy's own random choices apart from the source's


@dataclass
class _Picker:
    """Draws each round's clips: from the pool by strategy, or from the mix part the bandit
    picks. A mix keeps its weights under a pool strategy: each part's share of a round comes
    from the mix's schedule and the strategy picks within each part, so selection changes
    which clips of a part are bought, never how many (a 5% labelled part stays 5%)."""

    select: SelectConfig
    live: Iterator[QueryClip]
    rng: np.random.Generator
    precision: str
    bought: set[str] = field(default_factory=set)
    mix: MixSource | None = None
    arms: list[Iterator[QueryClip]] = field(default_factory=list)
    part_counts: list[int] = field(default_factory=list)
    part_live: list[bool] = field(default_factory=list)
    bandit: SourceBandit | None = None
    log: list[dict[str, Any]] = field(default_factory=list)

    def pick(
        self,
        size: int,
        student: StudentModel | None,
        centres: Callable[[], np.ndarray],
        bought_classes: np.ndarray,
    ) -> list[QueryClip]:
        if size <= 0:
            return []
        if self.bandit is not None and self.mix is not None:
            arms = self.bandit.draw(size)
            return [self.mix.part_clip(int(a), next(self.arms[int(a)])) for a in arms]
        if self.mix is not None:
            return self._pick_by_part(size, student, centres, bought_classes)
        pool = self._fresh(self.live, self._drawn(size, student))
        chosen, _ = self._choose(pool, size, student, centres, bought_classes)
        self.log.append({"pool": len(pool), "chosen": len(chosen)})
        return [pool[i] for i in chosen]

    def count(self, sent: list[QueryClip]) -> None:
        """Advance the mix's schedule past clips sent without picking (a rerun's replay)."""
        for query in sent:
            if self.mix is not None:
                self.part_counts[int(query.recipe.get("part", 0))] += 1

    def _drawn(self, size: int, student: StudentModel | None) -> int:
        return size if student is None else size * self.select.pool_factor

    def _choose(
        self,
        pool: list[QueryClip],
        size: int,
        student: StudentModel | None,
        centres: Callable[[], np.ndarray],
        bought_classes: np.ndarray,
    ) -> tuple[list[int], np.ndarray]:
        """Pool indices to buy and the student's predicted class of each (empty unscored)."""
        if student is None or len(pool) <= size:
            return list(range(min(size, len(pool)))), np.empty(0, np.int64)
        scores = score_pool(student, [q.clip for q in pool], precision=self.precision)
        chosen = choose(
            self.select.strategy,
            scores,
            size,
            self.rng,
            centres=centres() if self.select.strategy == "coreset" else None,
            bought_classes=bought_classes,
        )
        return [int(i) for i in chosen], scores.logits[chosen].argmax(axis=1)

    def _pick_by_part(
        self,
        size: int,
        student: StudentModel | None,
        centres: Callable[[], np.ndarray],
        bought_classes: np.ndarray,
    ) -> list[QueryClip]:
        assert self.mix is not None
        classes = bought_classes.astype(np.int64, copy=True)
        picked: list[QueryClip] = []
        entry: dict[str, Any] = {"pool": 0, "chosen": 0, "parts": {}}
        while len(picked) < size and any(self.part_live):
            plan = self.mix.next_parts(self.part_counts, size - len(picked), self.part_live)
            by_part: dict[int, list[QueryClip]] = {}
            for part in sorted(set(plan)):
                want = plan.count(part)
                pool = self._fresh(self.arms[part], self._drawn(want, student))
                chosen, predicted = self._choose(pool, want, student, centres, classes)
                # balanced: the next part evens out the classes this one has just bought
                np.add.at(classes, predicted, 1)
                by_part[part] = [self.mix.part_clip(part, pool[i]) for i in chosen]
                self.part_counts[part] += len(chosen)
                name = self.mix.parts[part][0]
                seen = entry["parts"].setdefault(name, {"pool": 0, "chosen": 0})
                seen["pool"] += len(pool)
                seen["chosen"] += len(chosen)
                entry["pool"] += len(pool)
                entry["chosen"] += len(chosen)
                if len(chosen) < want:  # the part has run out
                    self.part_live[part] = False
                    if self.mix.on_exhausted == "stop":
                        self.part_live = [False] * len(self.part_live)
            queues = {part: iter(clips) for part, clips in by_part.items()}
            picked.extend(q for part in plan if (q := next(queues[part], None)) is not None)
        self.log.append(entry)
        return picked

    def _fresh(self, stream: Iterator[QueryClip], count: int) -> list[QueryClip]:
        """``count`` clips from ``stream`` that were not bought already (a resumed run's
        replayed clips may come round again)."""
        pool: list[QueryClip] = []
        while len(pool) < count:
            batch = list(itertools.islice(stream, count - len(pool)))
            if not batch:
                break
            hashes = [clip_hash(q.clip) for q in batch]  # no stacked copy of the pool
            pool.extend(q for q, h in zip(batch, hashes, strict=True) if h not in self.bought)
        return pool

    def reward(self, student: StudentModel | None, answered: list[tuple[QueryClip, Any]]) -> None:
        """Bandit: each part's reward is the student's cross-entropy on the victim's top-1 for
        the clips it brought, measured before the student trains on them."""
        if self.bandit is None or student is None or not answered:
            return
        clips = np.stack([q.clip for q, _ in answered])
        logits = torch.from_numpy(score_pool(student, clips, precision=self.precision).logits)
        victim = torch.tensor([int(a["index"]) for _, a in answered])
        losses = torch.nn.functional.cross_entropy(logits, victim, reduction="none").numpy()
        arms = np.array([int(q.recipe.get("part", 0)) for q, _ in answered])
        self.bandit.update(arms, losses)


def _picker(config: AttackConfig, select: SelectConfig, shape: ClipShape) -> _Picker:
    source = build_source(config.query.source, shape=shape, seed=config.seed)
    rng = np.random.default_rng([config.seed, _SELECT_STREAM])
    picker = _Picker(select, iter(source), rng, config.train.precision)
    if isinstance(source, MixSource):
        picker.mix = source
        picker.arms = [iter(part) for _, part, _ in source.parts]
        picker.part_counts = [0] * len(source.parts)
        picker.part_live = [True] * len(source.parts)
    if select.strategy == "bandit":
        assert picker.mix is not None  # the config validator insists on a mix
        picker.bandit = SourceBandit(len(picker.mix.parts), step=select.bandit_step, rng=rng)
    return picker


def _latest_features(
    student: StudentModel | None, transfer: TransferSet, limit: int, precision: str
) -> np.ndarray:
    if student is None or len(transfer) == 0:
        return np.empty((0, 0), np.float32)
    start = max(0, len(transfer) - limit)
    clips = [clip for i, (_, clip) in enumerate(transfer.iter_clips()) if i >= start]
    return score_pool(student, clips, precision=precision).features


def _recorder(
    into: list[tuple[QueryClip, Any]],
) -> Callable[[list[QueryClip], list[dict[str, Any]]], None]:
    def observe(queries: list[QueryClip], answers: list[dict[str, Any]]) -> None:
        into.extend(zip(queries, answers, strict=True))

    return observe


def _add(total: CollectStats, part: CollectStats) -> None:
    total.clips += part.clips
    total.paid += part.paid
    total.cache_hits += part.cache_hits
    total.requests += part.requests
    total.seconds = round(total.seconds + part.seconds, 3)
    total.stopped_by = part.stopped_by
    for key, value in part.extra.items():
        if isinstance(value, int) and isinstance(total.extra.get(key, 0), int):
            total.extra[key] = total.extra.get(key, 0) + value
        else:
            total.extra[key] = value


async def collect_and_train_in_rounds(
    config: AttackConfig,
    client: VictimClient,
    info: ModelInfo,
    store: aioredis.Redis,
    *,
    on_point: PointHook,
    on_progress: Callable[[CollectStats], None] | None = None,
    checkpoints: Path | None = None,
    show_progress: bool = True,
) -> tuple[CollectStats, StudentModel]:
    """Spend ``config.budget`` in ``query.select.rounds`` rounds; returns the totals and the
    last student (``on_point`` runs after each round's training)."""
    select = config.query.select
    if select is None:
        raise ValueError("collect_and_train_in_rounds needs query.select")
    shape = clip_shape(info)
    allowance = min(config.budget, (await client.budget()).remaining)
    manifest = transfer_manifest(config, client, info)
    cache = ResponseCache(store, answer_identity(client.base_url, info))
    root = config.out / "transfer"
    previous = set_aside_previous(root, manifest)
    replay: Iterator[QueryClip] = iter(())
    if previous is not None:
        replay = (
            QueryClip(clip=clip, recipe=record.recipe, true_label=record.true_label)
            for record, clip in previous.iter_clips()
        )
    picker = _picker(config, select, shape)
    trainer = ContinualTrainer(
        config, manifest, checkpoints=checkpoints, show_progress=show_progress
    )
    totals = CollectStats()
    bar = tqdm(total=config.budget, desc="queries", unit="clip", disable=not show_progress)
    rounds_log: list[dict[str, Any]] = []
    with TransferSetWriter(root, manifest) as writer:
        for number, size in enumerate(round_sizes(config.budget, select.rounds), start=1):
            student = trainer.student
            replayed = list(itertools.islice(replay, size))
            picker.count(replayed)

            def centres(student: StudentModel | None = student) -> np.ndarray:
                bought = TransferSet(root)
                return _latest_features(
                    student, bought, select.coreset_centres, config.train.precision
                )

            answered_classes = np.bincount(
                [int(r.result["index"]) for r in TransferSet(root).records],
                minlength=len(manifest.labels),
            )
            queries = replayed + picker.pick(
                size - len(replayed), student, centres, answered_classes
            )
            answered: list[tuple[QueryClip, Any]] = []
            before = totals.clips

            def progress(stats: CollectStats, before: int = before, number: int = number) -> None:
                bar.update(before + stats.clips - bar.n)
                bar.set_postfix(round=number, paid=totals.paid + stats.paid)
                if on_progress is not None:
                    on_progress(stats)

            collector = Collector(
                client=client,
                cache=cache,
                writer=writer,
                target_clips=len(queries),
                paid_allowance=max(0, allowance - totals.paid),
                batch_clips=config.query.batch_clips,
                concurrency=config.query.concurrency,
                progress=progress,
                observer=_recorder(answered),
            )
            stats = await collector.run(iter(queries))
            _add(totals, stats)
            writer.flush()
            if answered:
                picker.bought.update(batch_hashes(np.stack([q.clip for q, _ in answered])))
            picker.reward(student, answered)
            rounds_log.append(
                {
                    "round": number,
                    "replayed": len(replayed),
                    "clips": stats.clips,
                    "paid": stats.paid,
                }
            )
            transfer = TransferSet(root)
            if len(transfer) > (trainer.trained_to[-1] if trainer.trained_to else 0):
                result = trainer.advance(transfer, len(transfer))
                assert trainer.student is not None
                on_point(len(transfer), trainer.student, result)
            if stats.stopped_by != "target" or stats.clips < size:
                if stats.stopped_by == "target":
                    totals.stopped_by = "source"
                break
    bar.close()
    discard_previous(previous)
    if trainer.student is None:
        raise ValueError("no clip was answered: nothing to train on")
    totals.extra["select"] = {
        **select.model_dump(mode="json"),
        "rounds_run": rounds_log,
        "pools": picker.log,
        **({} if picker.bandit is None else {"bandit": picker.bandit.history}),
    }
    return totals, trainer.student
