"""Stage 1, collect: query source -> answer cache -> victim -> transfer set (budget-exact).

Also labels the held-out evaluation clips (paid once through the evaluation key, then cached).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import redis.asyncio as aioredis
from httpx import AsyncBaseTransport
from tqdm.auto import tqdm

from attacker.client import ResponseCache, VictimClient, answer_identity
from attacker.collect import Collector, CollectStats, MemorySink
from attacker.config import AttackConfig
from attacker.data import TransferManifest, TransferSetWriter
from attacker.data.replay import discard_previous, replay_then_live, set_aside_previous
from attacker.eval.fidelity import EvalSet
from attacker.sources import ClipShape, SourceConfig, SourceError, build_source
from attacker.stealth import StealthShaper
from shared.detection import NaturalnessEmbedding
from shared.schemas import ModelInfo
from shared.urls import redact_url

__all__ = [
    "LabelledEvalSet",
    "clip_shape",
    "collect_transfer_set",
    "label_eval_set",
    "stealth_shaper",
    "transfer_manifest",
]

# A different seed than the attack stream, so evaluation clips are never training clips.
EVAL_SEED_OFFSET = 1_000_003
NATURAL_SEED_OFFSET = 7


def clip_shape(info: ModelInfo) -> ClipShape:
    return ClipShape(info.input.frames, info.input.height, info.input.width)


async def collect_transfer_set(
    config: AttackConfig,
    client: VictimClient,
    info: ModelInfo,
    store: aioredis.Redis,
    *,
    on_progress: Callable[[CollectStats], None] | None = None,
    show_progress: bool = True,
) -> CollectStats:
    """Spend ``config.budget`` queries into ``config.out / "transfer"``; paid answers are kept
    in the cache before use, so a rerun pays only for what it has not seen."""
    shape = clip_shape(info)
    budget = await client.budget()
    identity = answer_identity(client.base_url, info)
    manifest = transfer_manifest(config, client, info)
    bar = tqdm(total=config.budget, desc="queries", unit="clip", disable=not show_progress)

    def progress(stats: CollectStats) -> None:
        bar.update(stats.clips - bar.n)
        bar.set_postfix(paid=stats.paid, cached=stats.cache_hits)
        if on_progress is not None:
            on_progress(stats)

    root = config.out / "transfer"
    shaper = stealth_shaper(config, shape)
    # A stealth stream depends on the answers it got, so it is never replayed.
    previous = None if shaper is not None else set_aside_previous(root, manifest)
    with TransferSetWriter(root, manifest, reuse=previous) as writer:
        collector = Collector(
            client=client,
            cache=ResponseCache(store, identity),
            writer=writer,
            target_clips=config.budget,
            paid_allowance=min(config.budget, budget.remaining),
            batch_clips=config.query.batch_clips,
            concurrency=config.query.concurrency,
            progress=progress,
            observer=shaper.observe if shaper is not None else None,
        )
        stats = await collector.run(
            iter(shaper)
            if shaper is not None
            else replay_then_live(
                previous,
                lambda: iter(build_source(config.query.source, shape=shape, seed=config.seed)),
            )
        )
    discard_previous(previous)
    if shaper is not None:
        stats.extra["stealth"] = {
            **shaper.stats.to_dict(),
            "queries_before_alarm": stats.extra.get("blocked_after_paid"),
        }
    stats.extra["replayed_from_previous_run"] = 0 if previous is None else len(previous)
    stats.extra["shards_reused"] = writer.reused_shards
    bar.close()
    return stats


def transfer_manifest(
    config: AttackConfig, client: VictimClient, info: ModelInfo
) -> TransferManifest:
    """What a run's transfer set holds: the victim (URL without secrets), its answers' form, the
    clip shape, and the query stream (source, seed, stealth, selection) a rerun must match."""
    shape = clip_shape(info)
    select = config.query.select
    return TransferManifest(
        victim={
            "url": redact_url(client.base_url),
            "model": info.model,
            "identity": answer_identity(client.base_url, info),
            "top_k": info.top_k,
        },
        output=info.output.value,
        labels=list(info.labels),
        clip_shape=[shape.frames, shape.height, shape.width, 3],
        extra={
            "source": config.query.source.model_dump(mode="json"),
            "seed": config.seed,
            "stealth": config.stealth.model_dump(mode="json"),
            **({} if select is None else {"select": select.model_dump(mode="json")}),
        },
    )


@dataclass(frozen=True)
class LabelledEvalSet:
    clips: EvalSet
    info: ModelInfo  # what the evaluation key answers (its output mode)


async def label_eval_set(
    config: AttackConfig,
    store: aioredis.Redis,
    *,
    transport: AsyncBaseTransport | None = None,
) -> LabelledEvalSet:
    """The held-out clips and the victim's top-1 answers to them (paid once, then cached)."""
    source_config: SourceConfig = config.eval.source or config.query.source
    api_key = config.victim.eval_api_key or config.victim.api_key
    async with VictimClient(
        config.victim.url,
        api_key,
        transport=transport,
        compression=config.victim.compression,
        seed=config.seed,
    ) as client:
        info = await client.model_info()
        remaining = (await client.budget()).remaining
        sink = MemorySink()
        collector = Collector(
            client=client,
            cache=ResponseCache(store, answer_identity(client.base_url, info)),
            writer=sink,
            target_clips=config.eval.clips,
            paid_allowance=min(config.eval.clips, remaining),
            batch_clips=config.query.batch_clips,
            concurrency=config.query.concurrency,
        )
        source = build_source(
            source_config, shape=clip_shape(info), seed=config.seed + EVAL_SEED_OFFSET
        )
        stats = await collector.run(iter(source))
    if not sink.clips:
        raise RuntimeError("no evaluation clips could be labelled (eval key out of budget?)")
    return LabelledEvalSet(
        clips=EvalSet(
            clips=np.stack(sink.clips),
            victim_top1=np.array([r["index"] for r in sink.results], dtype=np.int64),
            true_labels=np.array(
                [-1 if t is None else t for t in sink.true_labels], dtype=np.int64
            ),
            paid=stats.paid,
        ),
        info=info,
    )


def stealth_shaper(config: AttackConfig, shape: ClipShape) -> StealthShaper | None:
    """The stealth stream shaper, when stealth is on, calibrated on clips it never sends.

    Calibration and mixing draw from one natural stream: the first ``calibration_clips`` fit
    the embedding, the mix continues after them. (Two streams of one source at two run seeds
    are not disjoint: a ``synthactions`` source ignores the run seed, so a calibration stream
    of its own would be the very clips the mix sends first.)
    """
    stealth = config.stealth
    if not stealth.enabled or stealth.natural is None:
        return None
    natural = iter(
        build_source(stealth.natural, shape=shape, seed=config.seed + NATURAL_SEED_OFFSET)
    )
    calibration = [q.clip for q in itertools.islice(natural, stealth.calibration_clips)]
    if len(calibration) < stealth.calibration_clips:
        raise SourceError(
            f"stealth.natural gave {len(calibration)} clips; calibration needs "
            f"{stealth.calibration_clips} and the mix more after them"
        )
    clips = np.stack(calibration)
    return StealthShaper(
        iter(build_source(config.query.source, shape=shape, seed=config.seed)),
        natural,
        NaturalnessEmbedding.fit(clips),
        target_w=stealth.target_w,
        start_fraction=stealth.start_fraction,
        min_fraction=stealth.min_fraction,
        max_fraction=stealth.max_fraction,
        min_spacing=stealth.min_spacing,
    )
