"""Stage 1 for a data-free run (``query.datafree``): a video generator trained against the
student, every clip it makes (and every probe around one) paid through the answer cache and kept
in the transfer set, so training, evaluation, the report and reruns treat it like any collect.

Resume: the loop's state (generator, student, optimisers, RNG) is saved to
``<out>/datafree/state.pt`` every ``checkpoint_every`` clips with the transfer set flushed to
that point. A rerun with the same settings replays the transfer set's clips up to the checkpoint
through the cache (answers found there are free; a lost one is paid again, never assumed),
restores the state and goes on; with no usable checkpoint it starts again from its seed, and the
clips it regenerates are found in the cache.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aioredis
import torch
from tqdm.auto import tqdm

from attacker.client import ResponseCache, VictimClient, answer_identity
from attacker.collect import CollectStats
from attacker.config import AttackConfig
from attacker.data import TransferManifest, TransferSet, TransferSetWriter
from attacker.datafree.answers import check_output_mode
from attacker.datafree.config import DataFreeSection
from attacker.datafree.generators import build_generator
from attacker.datafree.loop import DataFreeLoop, DataFreeState, RoundHook, new_state
from attacker.datafree.oracle import PaidOracle
from attacker.stages.collect import clip_shape
from attacker.stages.train import build_student
from attacker.train.process import prepare_training_process
from shared.schemas import ModelInfo
from shared.urls import redact_url

__all__ = ["STATE_FILE", "build_datafree_state", "collect_datafree", "datafree_fingerprint"]

STATE_FILE = Path("datafree") / "state.pt"
_REPLAY_CHUNK = 512


def datafree_fingerprint(config: AttackConfig, info: ModelInfo, identity: str) -> str:
    """What must match for a checkpoint to be resumed: the data-free settings, the seed, the
    student and the victim's answers (identity, clip shape)."""
    settings = config.query.datafree
    payload = json.dumps(
        [
            None if settings is None else settings.model_dump(mode="json"),
            config.seed,
            config.student.model_dump(mode="json"),
            identity,
            [info.input.frames, info.input.height, info.input.width],
        ],
        sort_keys=True,
        default=str,
    )
    return hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()


def build_datafree_state(
    config: AttackConfig, settings: DataFreeSection, info: ModelInfo
) -> DataFreeState:
    """A fresh generator and student (seeded by the run's seed) with their optimisers."""
    shape = clip_shape(info)
    torch.manual_seed(config.seed)
    generator = build_generator(
        settings.generator.name,
        latent_dim=settings.generator.latent_dim,
        frames=shape.frames,
        height=shape.height,
        width=shape.width,
        channels=settings.generator.width,
        **settings.generator.kwargs,
    )
    student = build_student(
        config, labels=info.labels, clip_shape=[shape.frames, shape.height, shape.width]
    )
    return new_state(settings, generator, student, seed=config.seed)


async def collect_datafree(
    config: AttackConfig,
    client: VictimClient,
    info: ModelInfo,
    store: aioredis.Redis,
    *,
    on_progress: Callable[[CollectStats], None] | None = None,
    show_progress: bool = True,
    on_round: RoundHook | None = None,
) -> CollectStats:
    """Spend ``config.budget`` queries on the data-free loop into ``config.out / "transfer"``.

    Refuses keys answering top-k or labels before paying anything. ``on_round(state, clips)``
    runs after every round (the benchmark evaluates the loop's student there).
    """
    settings = config.query.datafree
    if settings is None:
        raise ValueError("collect_datafree needs a query.datafree section")
    mode = check_output_mode(info.output)
    prepare_training_process(settings.threads)
    shape = clip_shape(info)
    identity = answer_identity(client.base_url, info)
    fingerprint = datafree_fingerprint(config, info, identity)
    manifest = TransferManifest(
        victim={
            "url": redact_url(client.base_url),
            "model": info.model,
            "identity": identity,
            "top_k": info.top_k,
        },
        output=info.output.value,
        labels=list(info.labels),
        clip_shape=[shape.frames, shape.height, shape.width, 3],
        extra={
            "source": {"kind": "datafree"},
            "datafree": settings.model_dump(mode="json"),
            "datafree_fingerprint": fingerprint,
            "seed": config.seed,
        },
    )
    root = config.out / "transfer"
    state_path = config.out / STATE_FILE
    state = build_datafree_state(config, settings, info)
    saved = _usable_checkpoint(state_path, fingerprint)
    previous = _set_aside(root, fingerprint, saved)
    budget = await client.budget()
    bar = tqdm(total=config.budget, desc="queries", unit="clip", disable=not show_progress)

    def progress(stats: CollectStats) -> None:
        bar.update(stats.clips - bar.n)
        bar.set_postfix(paid=stats.paid, cached=stats.cache_hits)
        if on_progress is not None:
            on_progress(stats)

    with TransferSetWriter(root, manifest) as writer:
        oracle = PaidOracle(
            client=client,
            cache=ResponseCache(store, identity),
            writer=writer,
            target_clips=config.budget,
            paid_allowance=min(config.budget, budget.remaining),
            batch_clips=config.query.batch_clips,
            concurrency=config.query.concurrency,
            progress=progress,
        )
        replayed = 0
        if previous is not None and saved is not None:
            replayed = await _replay(previous, oracle, int(saved["clips"]))
            if replayed == int(saved["clips"]):
                state.load_state_dict(saved)

        def checkpoint(current: DataFreeState) -> None:
            writer.flush()  # the records the checkpoint counts are on disk before it is
            state_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = state_path.with_suffix(".tmp")
            torch.save({**current.state_dict(), "fingerprint": fingerprint}, tmp)
            tmp.replace(state_path)

        if state.clips != replayed:  # the checkpoint could not be replayed in full
            state = build_datafree_state(config, settings, info)
        loop = DataFreeLoop(settings, state, oracle, mode=mode, num_classes=info.num_classes)
        state = await loop.run(on_round=on_round, on_checkpoint=checkpoint)
    if previous is not None:
        shutil.rmtree(previous.root, ignore_errors=True)
    bar.close()
    stats = oracle.stats
    stats.extra["replayed_from_previous_run"] = replayed
    stats.extra["datafree"] = _summary(settings, state, resumed_at=replayed)
    return stats


def _usable_checkpoint(path: Path, fingerprint: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        saved: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError):
        return None
    return saved if saved.get("fingerprint") == fingerprint else None


def _set_aside(root: Path, fingerprint: str, saved: dict[str, Any] | None) -> TransferSet | None:
    """The previous run's transfer set, moved to ``<root>.previous``, when it belongs to the same
    data-free run and holds the checkpoint's clips; else None (it is overwritten)."""
    aside = root.with_name(root.name + ".previous")
    shutil.rmtree(aside, ignore_errors=True)
    if saved is None or not (root / "manifest.json").is_file():
        return None
    try:
        old = TransferSet(root)
    except (OSError, ValueError, KeyError):
        return None
    if old.manifest.extra.get("datafree_fingerprint") != fingerprint:
        return None
    if len(old) < int(saved["clips"]):
        return None
    root.rename(aside)
    return TransferSet(aside)


async def _replay(previous: TransferSet, oracle: PaidOracle, count: int) -> int:
    """Send the previous run's first ``count`` clips through the oracle again (the cache answers
    them); returns how many were answered."""
    done = 0
    stream = previous.iter_clips(limit=count)
    while done < count:
        chunk = list(itertools.islice(stream, _REPLAY_CHUNK))
        if not chunk:
            break
        clips = np.stack([clip for _, clip in chunk])
        answers = await oracle.answer(clips, [record.recipe for record, _ in chunk])
        done += len(answers.results)
        if not answers.complete:
            break
    return done


def _summary(settings: DataFreeSection, state: DataFreeState, *, resumed_at: int) -> dict[str, Any]:
    last = state.history[-1] if state.history else {}
    generator_steps = sum(1 for h in state.history if "disagreement" in h)
    return {
        "generator": settings.generator.name,
        "rounds": state.rounds,
        "generator_steps": generator_steps,
        "probe_queries": generator_steps * settings.batch * settings.directions,
        "resumed_at_clips": resumed_at,
        "last_round": {k: round(v, 5) for k, v in last.items()},
    }
