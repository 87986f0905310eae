"""One real attack run in its own process: the attacker (HTTP, Redis answer cache, transfer
set, training, evaluation on held-out clips) against the range's victim, one torch thread."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

__all__ = ["AttackJob", "RunResult", "create_key", "prune_run", "run_attack_job"]

# Bulky run outputs the scoreboard no longer needs once read (reports and students stay).
_BULKY = ("transfer", "transfer.previous", "checkpoints", "eval_set.npz", "datafree")


@dataclass(frozen=True)
class AttackJob:
    attack: str
    defense: str
    config: dict[str, Any]  # the attacker's config, as YAML would hold it
    detector: str | None = None  # set on a rerun up to this detector's first alarm


@dataclass(frozen=True)
class RunResult:
    attack: str
    defense: str
    detector: str | None
    budget: int
    clips: int  # records in the transfer set (paid or from the cache)
    paid: int  # queries charged during this run
    stopped_by: str
    top1_agreement: float | None  # None when the run failed
    accuracy: float | None
    run_dir: str
    wall_seconds: float
    error: str | None = None  # why the run failed (one line)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def create_key(url: str, admin: str, **plan: Any) -> str:
    """A new API key on the victim at ``url`` (admin API); returns its secret."""
    response = httpx.post(
        f"{url}/admin/keys", json=plan, headers={"Authorization": f"Bearer {admin}"}, timeout=30
    )
    response.raise_for_status()
    key: str = response.json()["api_key"]
    return key


def run_attack_job(job: AttackJob) -> RunResult:
    """Entry point of a worker process (spawned: nothing inherited but the job)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from attacker.config import validate_config
    from attacker.run import run_attack

    config = validate_config(job.config, source=job.config["name"])
    started = time.perf_counter()
    try:
        report = asyncio.run(run_attack(config, show_progress=False))
    except Exception as exc:  # one failed cell must not lose hours of others
        return RunResult(
            attack=job.attack,
            defense=job.defense,
            detector=job.detector,
            budget=config.budget,
            clips=0,
            paid=0,
            stopped_by="error",
            top1_agreement=None,
            accuracy=None,
            run_dir=str(config.out),
            wall_seconds=round(time.perf_counter() - started, 1),
            error=f"{type(exc).__name__}: {exc}".splitlines()[0],
        )
    final = report["points"][-1]
    return RunResult(
        attack=job.attack,
        defense=job.defense,
        detector=job.detector,
        budget=config.budget,
        clips=int(report["collect"]["clips"]),
        paid=int(report["collect"]["paid"]),
        stopped_by=str(report["collect"]["stopped_by"]),
        top1_agreement=float(final["top1_agreement"]),
        accuracy=final.get("accuracy"),
        run_dir=str(config.out),
        wall_seconds=round(time.perf_counter() - started, 1),
    )


def prune_run(run_dir: Path) -> None:
    """Drop a finished run's transfer set, checkpoints and eval clips (its report stays)."""
    for name in _BULKY:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()
