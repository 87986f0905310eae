"""One extraction run, end to end: spend the budget, build the transfer set, label the eval
set, train a fresh student per budget point, evaluate, export, report."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from httpx import AsyncBaseTransport
from tqdm.auto import tqdm

from attacker.client import ResponseCache, RetryPolicy, VictimClient
from attacker.collect import Collector, CollectStats, MemorySink
from attacker.config import AttackConfig
from attacker.data import TransferManifest, TransferSet, TransferSetWriter
from attacker.data.replay import discard_previous, replay_then_live, set_aside_previous
from attacker.eval.fidelity import EvalSet, evaluate
from attacker.eval.report import write_report
from attacker.provenance import write_provenance
from attacker.sources import ClipShape, SourceConfig, build_source
from attacker.stealth import StealthShaper
from attacker.students import StudentPreprocessing, create_student, export_student
from attacker.train.loop import TrainSettings, train_student
from attacker.train.losses import build_configured_loss, default_loss_for
from shared.detection import NaturalnessEmbedding
from shared.hashing import victim_identity
from shared.schemas import ModelInfo, OutputMode


@dataclass(frozen=True)
class RunHooks:
    """Optional observers (metrics exporter, tests)."""

    on_collect: Callable[[CollectStats], None] | None = None
    on_phase: Callable[[str], None] | None = None
    on_fidelity: Callable[[int, float], None] | None = None
    on_retry: Callable[[str], None] | None = None


class _RetryCounter:
    def __init__(self, forward: Callable[[str], None] | None) -> None:
        self.count = 0
        self._forward = forward

    def __call__(self, reason: str) -> None:
        self.count += 1
        if self._forward is not None:
            self._forward(reason)


def _identity(url: str, info: ModelInfo) -> str:
    return victim_identity(url, info.model, info.output.value, info.top_k)


async def run_attack(
    config: AttackConfig,
    *,
    transport: AsyncBaseTransport | None = None,
    redis: aioredis.Redis | None = None,
    hooks: RunHooks | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    hooks = hooks or RunHooks()
    started = time.perf_counter()
    run_dir = config.out
    provenance = write_provenance(run_dir, config)
    store = redis or aioredis.Redis.from_url(config.redis_url, decode_responses=True)
    retry = RetryPolicy(max_attempts=config.query.max_attempts)
    retries = _RetryCounter(hooks.on_retry)
    try:
        async with VictimClient(
            config.victim.url,
            config.victim.api_key,
            transport=transport,
            retry=retry,
            timeout_s=config.victim.timeout_s,
            compression=config.victim.compression,
            on_retry=retries,
            seed=config.seed,
        ) as client:
            _phase(hooks, "collect")
            info = await client.model_info()
            shape = ClipShape(info.input.frames, info.input.height, info.input.width)
            collect = await _collect(config, client, info, shape, store, hooks, show_progress)
            collect.retries = retries.count
            _phase(hooks, "eval-set")
            eval_set, eval_info = await _label_eval_set(
                config, info, shape, store, transport, show_progress
            )
    finally:
        if redis is None:
            await store.aclose()

    transfer = TransferSet(run_dir / "transfer")
    mode = OutputMode(transfer.manifest.output)
    loss_name = default_loss_for(mode) if config.train.loss == "auto" else config.train.loss
    points = []
    student = None
    for fraction in config.eval.points:
        limit = max(1, round(fraction * len(transfer)))
        _phase(hooks, f"train@{limit}")
        student = _fresh_student(config, info, shape)
        loss_fn = build_configured_loss(
            loss_name,
            mode,
            temperature=config.train.temperature,
            true_label_weight=config.train.true_label_weight,
        )
        settings = train_settings(config, limit)
        trained = train_student(
            student,
            transfer,
            loss_fn,
            settings,
            limit=limit,
            checkpoint=run_dir / "checkpoints" / f"q{limit}.pt",
            fingerprint=_fingerprint(transfer, limit, settings, config),
            desc=f"train {limit} queries",
            show_progress=show_progress,
        )
        fidelity = evaluate(student, eval_set)
        if hooks.on_fidelity is not None:
            hooks.on_fidelity(limit, fidelity.top1_agreement)
        points.append(
            {
                "queries": limit,
                **fidelity.to_dict(),
                "train_seconds": round(trained.seconds, 1),
                "epochs": trained.epochs,
                "resumed_from_epoch": trained.resumed_from_epoch,
            }
        )
    assert student is not None
    export_dir = export_student(student, run_dir / "student").parent
    _phase(hooks, "report")
    report = {
        "name": config.name,
        "victim": {
            "url": config.victim.url,
            "model": info.model,
            "output": info.output.value,
            "top_k": info.top_k,
            "num_classes": info.num_classes,
        },
        "budget": config.budget,
        "source": config.query.source.kind,
        "loss": loss_name,
        "student": {"architecture": config.student.architecture, "export": str(export_dir)},
        "collect": asdict(collect),
        "detection": _detection_summary(collect),
        "eval": {
            "clips": len(eval_set),
            "paid": eval_set.paid,
            "source": (config.eval.source or config.query.source).kind,
            "victim_output": eval_info.output.value,
            "victim_accuracy": points[-1]["victim_accuracy"],
        },
        "points": points,
        "final": points[-1],
        "git_commit": provenance["git_commit"],
        "provenance": provenance,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    paths = write_report(run_dir, report)
    report["paths"] = {k: str(v) for k, v in paths.items()}
    _phase(hooks, "done")
    return report


def _phase(hooks: RunHooks, name: str) -> None:
    if hooks.on_phase is not None:
        hooks.on_phase(name)


async def _collect(
    config: AttackConfig,
    client: VictimClient,
    info: ModelInfo,
    shape: ClipShape,
    store: aioredis.Redis,
    hooks: RunHooks,
    show_progress: bool,
) -> CollectStats:
    budget = await client.budget()
    identity = _identity(client.base_url, info)
    manifest = TransferManifest(
        victim={
            "url": client.base_url,
            "model": info.model,
            "identity": identity,
            "top_k": info.top_k,
        },
        output=info.output.value,
        labels=list(info.labels),
        clip_shape=[shape.frames, shape.height, shape.width, 3],
        extra={
            "source": config.query.source.model_dump(mode="json"),
            "seed": config.seed,
            "stealth": config.stealth.model_dump(mode="json"),
        },
    )
    bar = tqdm(total=config.budget, desc="queries", unit="clip", disable=not show_progress)

    def progress(stats: CollectStats) -> None:
        bar.update(stats.clips - bar.n)
        bar.set_postfix(paid=stats.paid, cached=stats.cache_hits)
        if hooks.on_collect is not None:
            hooks.on_collect(stats)

    root = config.out / "transfer"
    shaper = _stealth_shaper(config, shape)
    # A stealth stream depends on the answers it got, so it is never replayed.
    previous = None if shaper is not None else set_aside_previous(root, manifest)
    with TransferSetWriter(root, manifest) as writer:
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
    bar.close()
    return stats


async def _label_eval_set(
    config: AttackConfig,
    info: ModelInfo,
    shape: ClipShape,
    store: aioredis.Redis,
    transport: AsyncBaseTransport | None,
    show_progress: bool,
) -> tuple[EvalSet, ModelInfo]:
    """The held-out clips and the victim's answers to them (paid once, then cached)."""
    source_config: SourceConfig = config.eval.source or config.query.source
    api_key = config.victim.eval_api_key or config.victim.api_key
    async with VictimClient(
        config.victim.url,
        api_key,
        transport=transport,
        compression=config.victim.compression,
        seed=config.seed,
    ) as client:
        eval_info = await client.model_info()
        remaining = (await client.budget()).remaining
        sink = MemorySink()
        collector = Collector(
            client=client,
            cache=ResponseCache(store, _identity(client.base_url, eval_info)),
            writer=sink,
            target_clips=config.eval.clips,
            paid_allowance=min(config.eval.clips, remaining),
            batch_clips=config.query.batch_clips,
            concurrency=config.query.concurrency,
        )
        # A different seed than the attack stream, so eval clips are never training clips.
        source = build_source(source_config, shape=shape, seed=config.seed + 1_000_003)
        stats = await collector.run(iter(source))
    if not sink.clips:
        raise RuntimeError("no evaluation clips could be labelled (eval key out of budget?)")
    return EvalSet(
        clips=np.stack(sink.clips),
        victim_top1=np.array([r["index"] for r in sink.results], dtype=np.int64),
        true_labels=np.array([-1 if t is None else t for t in sink.true_labels], dtype=np.int64),
        paid=stats.paid,
    ), eval_info


def _detection_summary(collect: CollectStats) -> str | None:
    """What the attacker saw of the victim's detection, and what its stealth mode did."""
    parts = []
    if collect.stopped_by == "blocked":
        parts.append(
            f"blocked by the victim after {collect.extra.get('blocked_after_paid')} paid queries"
        )
    elif collect.stopped_by == "throttled":
        parts.append(f"throttled by the victim after {collect.paid} paid queries")
    stealth = collect.extra.get("stealth")
    if stealth:
        min_w = stealth["local_min_w"]
        parts.append(
            f"stealth: {stealth['natural']} natural + {stealth['attack']} attack clips "
            f"(final natural share {stealth['natural_fraction']}), local PRADA W min "
            f"{'n/a' if min_w is None else round(min_w, 3)}; queries before any alarm: "
            f"{stealth['queries_before_alarm'] or 'all (never blocked)'}"
        )
    return "; ".join(parts) or None


def _stealth_shaper(config: AttackConfig, shape: ClipShape) -> StealthShaper | None:
    stealth = config.stealth
    if not stealth.enabled or stealth.natural is None:
        return None
    # Calibrate on natural clips that are never sent (another seed than the mixed-in ones).
    calibration = build_source(stealth.natural, shape=shape, seed=config.seed + 2_000_003)
    clips = np.stack(
        [q.clip for q in itertools.islice(iter(calibration), stealth.calibration_clips)]
    )
    return StealthShaper(
        iter(build_source(config.query.source, shape=shape, seed=config.seed)),
        iter(build_source(stealth.natural, shape=shape, seed=config.seed + 7)),
        NaturalnessEmbedding.fit(clips),
        target_w=stealth.target_w,
        start_fraction=stealth.start_fraction,
        min_fraction=stealth.min_fraction,
        max_fraction=stealth.max_fraction,
        min_spacing=stealth.min_spacing,
    )


def _fresh_student(config: AttackConfig, info: ModelInfo, shape: ClipShape) -> Any:
    s = config.student
    prep = StudentPreprocessing(
        frames=s.frames or shape.frames,
        height=s.height or shape.height,
        width=s.width or shape.width,
        mean=(0.45, 0.45, 0.45),
        std=(0.225, 0.225, 0.225),
    )
    return create_student(
        s.architecture,
        num_classes=info.num_classes,
        preprocessing=prep,
        labels=info.labels,
        backbone_weights=s.backbone_weights,
        **s.kwargs,
    )


def train_settings(config: AttackConfig, clips: int, *, epochs: int | None = None) -> TrainSettings:
    """The run's schedule for ``clips`` training clips: ``epochs`` (default the config's),
    capped by ``train.max_clip_steps``."""
    t = config.train
    epochs = epochs or t.epochs
    if t.max_clip_steps is not None:
        epochs = max(1, min(epochs, t.max_clip_steps // max(1, clips)))
    return TrainSettings(
        epochs=epochs,
        batch_size=t.batch_size,
        lr=t.lr,
        backbone_lr_ratio=t.backbone_lr_ratio,
        weight_decay=t.weight_decay,
        schedule=t.schedule,
        warmup_steps=t.warmup_steps,
        seed=config.seed,
    )


def _fingerprint(
    transfer: TransferSet, limit: int, settings: TrainSettings, config: AttackConfig
) -> str:
    """Identifies what a checkpoint was trained on, so a rerun resumes only the same training."""
    hashes = "".join(r.clip_hash for r in transfer.records[:limit])
    payload = json.dumps(
        [
            hashes,
            asdict(settings),
            config.student.model_dump(mode="json"),
            config.train.model_dump(mode="json"),
        ],
        sort_keys=True,
        default=str,
    )
    import hashlib

    return hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()


def load_report(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / "report.json").read_text())
    return data
