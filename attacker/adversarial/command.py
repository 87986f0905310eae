"""``attacker transfer RUN_DIR``: the request (options checked, defaults read from the run
directory) and the run that measures it, writes ``RUN_DIR/transfer_attack/`` and adds the
transfer table to the run's report (report.json / report.md)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import yaml
from httpx import AsyncBaseTransport
from redis.exceptions import RedisError

from attacker.adversarial.options import PGDOptions, perturbation_of
from attacker.adversarial.report import run_report_section, write_transfer_report
from attacker.adversarial.stage import measure_transfer, starting_clips
from attacker.client import ResponseCache, VictimClient, answer_identity
from attacker.client.store import open_store
from attacker.eval.fidelity import EvalSet, evaluate
from attacker.eval.report import add_report_section
from attacker.provenance import git_commit
from attacker.sources import ClipShape
from attacker.students import StudentModel, load_exported_student, student_config
from shared.synthactions import CLASS_NAMES
from shared.urls import redact_url

OUT_DIR = "transfer_attack"
STUDENT_DIR = "student"
EVAL_SET_FILE = "eval_set.npz"  # written by ``attacker run`` (attacker.run.EVAL_SET_FILE)


@dataclass(frozen=True)
class TransferRequest:
    run_dir: Path
    settings: tuple[PGDOptions, ...]
    n: int
    source_seed: int
    seed: int
    victim_url: str
    api_key: str
    redis_url: str
    out: Path

    @classmethod
    def build(
        cls,
        run_dir: Path,
        *,
        eps: Sequence[float],
        steps: int = 10,
        step_size: float | None = None,
        perturbations: Sequence[str] = ("per-frame",),
        n: int = 200,
        source_seed: int = 515151,
        seed: int = 0,
        random_start: bool = False,
        momentum: float = 0.0,
        victim_url: str | None = None,
        api_key: str | None = None,
        redis_url: str | None = None,
        out: Path | None = None,
    ) -> TransferRequest:
        """Check the options (one-line ValueError) and fill the victim URL and Redis URL from
        the run's ``config.resolved.yaml`` where not given."""
        if not run_dir.is_dir():
            raise ValueError(f"{run_dir} is not a run directory")
        if not (run_dir / STUDENT_DIR).is_dir():
            raise ValueError(f"{run_dir} has no exported student ({STUDENT_DIR}/)")
        if n < 1:
            raise ValueError(f"--n must be at least 1, got {n}")
        if source_seed < 0 or seed < 0:
            raise ValueError("seeds must be non-negative")
        if not eps:
            raise ValueError("give at least one --eps")
        kinds = [perturbation_of(p) for p in dict.fromkeys(perturbations)]
        if not kinds:
            raise ValueError("give at least one --perturbation")
        settings = tuple(
            PGDOptions(
                eps=float(e),
                steps=steps,
                step_size=step_size,
                perturbation=kind,
                random_start=random_start,
                momentum=momentum,
            )
            for kind in kinds
            for e in sorted(set(eps))
        )
        resolved = _resolved_config(run_dir)
        url = victim_url or resolved.get("victim", {}).get("url")
        if not url:
            raise ValueError(f"no victim URL: pass --victim-url ({run_dir} records none)")
        if not api_key:
            raise ValueError("no API key: set VIDSTEAL_API_KEY or pass --api-key")
        store = redis_url or resolved.get("redis_url")
        if not store or "***" in str(store):
            raise ValueError("no Redis URL for the answer cache: pass --redis-url")
        return cls(
            run_dir=run_dir,
            settings=settings,
            n=n,
            source_seed=source_seed,
            seed=seed,
            victim_url=str(url),
            api_key=api_key,
            redis_url=str(store),
            out=out or run_dir / OUT_DIR,
        )


def _resolved_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.resolved.yaml"
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not YAML: {exc}") from None
    return data if isinstance(data, dict) else {}


def _clone_summary(run_dir: Path, student: StudentModel) -> dict[str, Any]:
    config = student_config(student)
    summary: dict[str, Any] = {
        "architecture": config.architecture,
        "export": str(run_dir / STUDENT_DIR),
        "eval_set_agreement": None,
    }
    eval_path = run_dir / EVAL_SET_FILE
    if eval_path.is_file():
        summary["eval_set_agreement"] = round(
            evaluate(student, EvalSet.load(eval_path)).top1_agreement, 4
        )
    return summary


async def run_transfer_command(
    request: TransferRequest,
    *,
    transport: AsyncBaseTransport | None = None,
    redis: aioredis.Redis | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Measure the transfer attack, write transfer.json + transfer.md, return a summary."""
    started = time.perf_counter()
    student = load_exported_student(request.run_dir / STUDENT_DIR)
    clone = _clone_summary(request.run_dir, student)
    store = redis or open_store(request.redis_url)
    try:
        async with VictimClient(request.victim_url, request.api_key, transport=transport) as client:
            info = await client.model_info()
            if tuple(info.labels) != CLASS_NAMES:
                raise ValueError(
                    f"the victim ({info.model}) does not answer with SynthActions' classes; "
                    "the starting clips and their true labels are SynthActions"
                )
            if student_config(student).num_classes != len(info.labels):
                raise ValueError("the clone and the victim have different class counts")
            before = await client.budget()
            start = starting_clips(
                ClipShape(info.input.frames, info.input.height, info.input.width),
                request.n,
                request.source_seed,
            )
            measured = await measure_transfer(
                student,
                start,
                request.settings,
                client=client,
                cache=ResponseCache(store, answer_identity(client.base_url, info)),
                seed=request.seed,
                show_progress=show_progress,
            )
            after = await client.budget()
    except RedisError as exc:
        raise ValueError(f"answer cache at {redact_url(request.redis_url)}: {exc}") from None
    finally:
        if redis is None:
            await store.aclose()
    report = {
        "run_dir": str(request.run_dir),
        "victim": {
            "url": redact_url(request.victim_url),
            "model": info.model,
            "output": info.output.value,
            "key_id": info.key_id,
        },
        "clone": clone,
        "seed": request.seed,
        **measured,
        "budget": {"spent_before": before.spent, "spent_after": after.spent},
        "git_commit": git_commit(Path(__file__).resolve().parent),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    paths = write_transfer_report(request.out, report)
    add_report_section(request.run_dir, "transfer", run_report_section(report, paths["markdown"]))
    return {
        "report": str(paths["markdown"]),
        "paid": measured["queries"]["paid"],
        "cache_hits": measured["queries"]["cache_hits"],
        "results": [
            {
                "eps": r["eps"],
                "perturbation": r["perturbation"],
                "transfer": r["transfer"]["rate"],
                "noise": r["noise"]["rate"],
                "ratio": r["ratio"],
            }
            for r in report["results"]
        ],
    }
