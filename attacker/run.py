"""One extraction run, end to end, as four visible stages:

collect (source -> cache -> victim -> transfer set; the evaluation clips labelled) -> train (a
student over the budget points) -> evaluate (fidelity after each point) -> report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from httpx import AsyncBaseTransport

from attacker.client import RetryPolicy, VictimClient
from attacker.client.store import open_store
from attacker.collect import CollectStats
from attacker.config import AttackConfig
from attacker.data import TransferSet
from attacker.eval.fidelity import evaluate
from attacker.provenance import write_provenance
from attacker.stages.collect import LabelledEvalSet, collect_transfer_set, label_eval_set
from attacker.stages.datafree import collect_datafree
from attacker.stages.report import build_report, point_entry, write_run_report
from attacker.stages.rounds import collect_and_train_in_rounds
from attacker.stages.train import train_over_points
from attacker.students import StudentModel, export_student
from attacker.train.loop import TrainResult
from shared.schemas import OutputMode

#: The labelled evaluation clips, kept in the run directory for ``prune`` and ``transfer``.
EVAL_SET_FILE = "eval_set.npz"


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
    store = redis or open_store(config.redis_url)
    retries = _RetryCounter(hooks.on_retry)
    points: list[dict[str, Any]] = []
    eval_set: LabelledEvalSet | None = None

    def evaluate_point(queries: int, student: StudentModel, trained: TrainResult) -> None:
        assert eval_set is not None
        _phase(hooks, f"evaluate@{queries}")
        fidelity = evaluate(student, eval_set.clips)
        if hooks.on_fidelity is not None:
            hooks.on_fidelity(queries, fidelity.top1_agreement)
        points.append(point_entry(queries, fidelity, trained))

    selected: StudentModel | None = None
    try:
        async with VictimClient(
            config.victim.url,
            config.victim.api_key,
            transport=transport,
            retry=RetryPolicy(max_attempts=config.query.max_attempts),
            timeout_s=config.victim.timeout_s,
            compression=config.victim.compression,
            on_retry=retries,
            seed=config.seed,
        ) as client:
            info = await client.model_info()
            if config.query.select is None:
                _phase(hooks, "collect")
                collect = await (
                    collect_datafree if config.query.datafree else collect_transfer_set
                )(
                    config,
                    client,
                    info,
                    store,
                    on_progress=hooks.on_collect,
                    show_progress=show_progress,
                )
            _phase(hooks, "eval-set")
            eval_set = await label_eval_set(config, store, transport=transport)
            eval_set.clips.save(run_dir / EVAL_SET_FILE)
            if config.query.select is not None:
                # Active selection needs the student between rounds: collect and train together.
                _phase(hooks, "collect+train")
                collect, selected = await collect_and_train_in_rounds(
                    config,
                    client,
                    info,
                    store,
                    on_point=evaluate_point,
                    on_progress=hooks.on_collect,
                    checkpoints=run_dir / "checkpoints",
                    show_progress=show_progress,
                )
            collect.retries = retries.count
    finally:
        if redis is None:
            await store.aclose()

    transfer = TransferSet(run_dir / "transfer")
    if selected is not None:
        student = selected
    else:
        _phase(hooks, "train")
        student = train_over_points(
            config,
            transfer,
            on_point=evaluate_point,
            checkpoints=run_dir / "checkpoints",
            show_progress=show_progress,
        )
    export_dir = export_student(student, run_dir / "student").parent
    _phase(hooks, "report")
    mode = OutputMode(transfer.manifest.output)
    report = build_report(
        config,
        info=info,
        collect=collect,
        eval_set=eval_set,
        loss=config.train.loss_spec(mode).name,
        points=points,
        export_dir=export_dir,
        provenance=provenance,
        wall_seconds=time.perf_counter() - started,
    )
    report = write_run_report(run_dir, report)
    _phase(hooks, "done")
    return report


def _phase(hooks: RunHooks, name: str) -> None:
    if hooks.on_phase is not None:
        hooks.on_phase(name)


def load_report(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / "report.json").read_text())
    return data
