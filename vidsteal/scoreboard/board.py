"""The scoreboard run: every attack against every defense (one real attack run each) and every
detector (its paid stream replayed; the attack rerun from the cache up to the first alarm).

Agreement at an alarm: the undefended run's config rerun with the budget cut to the alarm, on
the same key, so every answer comes from the attacker's cache (0 paid, recorded); active
selection and the data-free generator choose their queries by the budget, so their rerun reads
the undefended run's paid clips up to the alarm (an npz source) with the same training recipe.

Processes: one redis-server and one uvicorn victim (the attack runs' target, over HTTP); the
attack runs in ``spec.jobs`` worker processes (one torch thread each); this process holds the
victim app in process too (same model, its own Redis database) to replay query streams through
the detectors and to serve the benign traffic, as ``bench/detection.py`` does.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import secrets
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from attacker.provenance import git_commit
from shared.schemas import DefensePolicy
from victim_server.app import create_app
from victim_server.services import Services
from victim_server.settings import Settings
from vidsteal.processes import REPO, RedisProcess, VictimProcess, start_redis, start_victim
from vidsteal.scoreboard.attacks import (
    CLIPS_PER_VIDEO,
    STUDENT,
    TRAIN,
    attack_config,
    prefix_stable,
    recipe_without_stream,
    scoreboard_attacks,
)
from vidsteal.scoreboard.benign import am_taus, benign_sessions, benign_videos
from vidsteal.scoreboard.defenses import AM_FRACTION, defense_policies
from vidsteal.scoreboard.panel import DetectorPanel, available_detectors, replay_requests
from vidsteal.scoreboard.runs import AttackJob, RunResult, create_key, prune_run, run_attack_job
from vidsteal.scoreboard.spec import ScoreboardSpec, SpecError
from vidsteal.scoreboard.streams import paid_batches, request_sizes, video_folder, write_prefix

__all__ = ["run_scoreboard"]

ATTACK_VIDEO_SEED = 5
BENIGN_VIDEO_SEED = 8080


def run_scoreboard(spec: ScoreboardSpec) -> dict[str, Any]:
    """Run the grid; returns the results (``render.write_outputs`` writes the files)."""
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the victim and the worker processes
    started = time.perf_counter()
    spec.out.mkdir(parents=True, exist_ok=True)
    results = asyncio.run(_run(spec))
    results["seconds"] = round(time.perf_counter() - started, 1)
    return results


def _student(spec: ScoreboardSpec) -> dict[str, Any]:
    if spec.student_widths is None:
        return STUDENT
    return {**STUDENT, "kwargs": {**STUDENT["kwargs"], "widths": list(spec.student_widths)}}


class _Grid:
    """The live range and the bookkeeping of one scoreboard run."""

    def __init__(self, spec: ScoreboardSpec, redis: RedisProcess, victim: VictimProcess) -> None:
        self.spec = spec
        self.redis = redis
        self.victim = victim
        self.admin = victim.env["VIDSTEAL_ADMIN_TOKEN"]
        self.recipes = scoreboard_attacks(
            video_folder(
                spec.out / "videos" / "attack",
                seed=ATTACK_VIDEO_SEED,
                videos=-(-spec.budget // CLIPS_PER_VIDEO),  # enough for the budget
                layered=True,
            )
        )
        self.eval_key = create_key(
            victim.url,
            self.admin,
            budget=spec.eval_clips * (len(spec.attacks) * len(spec.defenses) + 1) * 4,
            output="label",
            name="scoreboard-eval",
        )
        self.keys: dict[str, str] = {}  # attack -> its undefended key (the reruns reuse it)
        self.configs: dict[str, dict[str, Any]] = {}  # run directory -> the attacker's config

    def job(
        self,
        attack: str,
        defense: str,
        policy: dict[str, Any],
        budget: int,
        detector: str | None,
        prefix: Path | None = None,
    ) -> AttackJob:
        """One run; a rerun to ``detector``'s alarm reads ``prefix`` (the paid clips in order)
        instead of the attack's own stream when that stream is not prefix-stable."""
        if detector is None:
            key = create_key(
                self.victim.url,
                self.admin,
                budget=budget,
                output="probs",
                name=f"{attack}-{defense}",
                defenses=policy,
            )
            if defense == "none":
                self.keys[attack] = key
        else:
            key = self.keys[attack]  # same answer identity: every answer is in the cache
        name = f"{attack}-{defense}" + ("" if detector is None else f"-alarm-{detector}")
        overrides = {} if self.spec.epochs is None else {"epochs": self.spec.epochs}
        recipe = self.recipes[attack]
        if prefix is not None:
            recipe = {
                **recipe_without_stream(recipe),
                "source": {"kind": "npz", "path": str(prefix)},
            }
        config = attack_config(
            name,
            recipe,
            seed=self.spec.seed,
            url=self.victim.url,
            key=key,
            eval_key=self.eval_key,
            redis_url=self.redis.url,
            out=self.spec.out / "runs",
            budget=budget,
            eval_clips=self.spec.eval_clips,
            overrides=overrides,
            student=_student(self.spec),
        )
        self.configs[config["out"]] = config
        return AttackJob(attack=attack, defense=defense, config=config, detector=detector)


async def _run(spec: ScoreboardSpec) -> dict[str, Any]:
    redis = start_redis(spec.out / "redis")
    victim: VictimProcess | None = None
    try:
        victim = start_victim(
            redis.url,
            spec.out / "victim.log",
            admin_token=secrets.token_hex(16),
            extra_env={"VIDSTEAL_THREADS": "1"},
        )
        # The in-process app (detector replay, benign traffic) keeps its state in database 1.
        settings = Settings(
            admin_token=secrets.token_hex(16),  # type: ignore[arg-type]
            redis_url=redis.url.rsplit("/", 1)[0] + "/1",
            threads=1,
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            return await _grid(spec, app.state.services, _Grid(spec, redis, victim))
    finally:
        if victim is not None:
            victim.stop()
        redis.stop()


def _detectors(spec: ScoreboardSpec, services: Services) -> tuple[str, ...]:
    offered = available_detectors(services)
    if spec.detectors is None:
        return offered
    unknown = [d for d in spec.detectors if d not in offered]
    if unknown:
        raise SpecError(f"unknown detectors {unknown}; this victim offers {', '.join(offered)}")
    return spec.detectors


async def _grid(spec: ScoreboardSpec, services: Services, grid: _Grid) -> dict[str, Any]:
    detectors = _detectors(spec, services)
    tau = (await am_taus(services, spec.calibration_clips, [AM_FRACTION]))[AM_FRACTION]
    policies = {name: defense_policies(tau)[name] for name in spec.defenses}
    runs: dict[tuple[str, str, str | None], RunResult] = {}
    alarms: dict[str, dict[str, int | None]] = {}
    bar = tqdm(total=len(spec.attacks) * len(spec.defenses), desc="attack runs", unit="run")
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=spec.jobs, mp_context=context) as pool:
        loop = asyncio.get_running_loop()

        def submit(job: AttackJob) -> asyncio.Future[RunResult]:
            future: Future[RunResult] = pool.submit(run_attack_job, job)
            return asyncio.wrap_future(future, loop=loop)

        pending = {
            submit(grid.job(a, d, policies[d], spec.budget, None))
            for a in spec.attacks
            for d in spec.defenses
        }
        # While the attacks run: the benign columns, in this process.
        benign = await _benign(spec, services, detectors, policies)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                run = future.result()
                runs[(run.attack, run.defense, run.detector)] = run
                bar.update(1)
                tqdm.write(_line(run))
                if run.defense == "none" and run.detector is None and run.error is None:
                    config = grid.configs[run.run_dir]
                    alarms[run.attack] = await _replay(services, detectors, run, config)
                    fired = {d: n for d, n in alarms[run.attack].items() if n is not None}
                    prefix = None
                    if fired and not prefix_stable(grid.recipes[run.attack]):
                        prefix = write_prefix(
                            Path(run.run_dir) / "transfer",
                            max(fired.values()),
                            spec.out / "prefixes" / f"{run.attack}.npz",
                        )
                    for detector, alarm in fired.items():
                        bar.total += 1
                        job = grid.job(run.attack, "none", {}, alarm, detector, prefix)
                        pending.add(submit(job))
                prune_run(Path(run.run_dir))
    bar.close()
    return _results(spec, grid, detectors, policies, tau, runs, alarms, benign, services)


async def _replay(
    services: Services, detectors: tuple[str, ...], run: RunResult, config: dict[str, Any]
) -> dict[str, int | None]:
    """The undefended run's paid queries, in order and request sizes, through each detector."""
    select = config["query"].get("select")
    sizes = request_sizes(
        run.paid, config["query"]["batch_clips"], select["rounds"] if select else 1
    )
    panel = DetectorPanel(services, f"replay-{run.attack}", detectors)
    await replay_requests(panel, paid_batches(Path(run.run_dir) / "transfer", sizes))
    return dict(panel.alarms)


async def _benign(
    spec: ScoreboardSpec,
    services: Services,
    detectors: tuple[str, ...],
    policies: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    parsed = {name: DefensePolicy.model_validate(body) for name, body in policies.items()}
    sessions = await benign_sessions(services, detectors, parsed, spec.benign)
    root = video_folder(
        spec.out / "videos" / "benign",
        seed=BENIGN_VIDEO_SEED,
        videos=spec.benign_videos,
        layered=False,
    )
    videos = await benign_videos(services, detectors, root, spec.benign_videos)
    tqdm.write(
        f"benign: {sessions['queries']} session clips, {videos['queries']} mp4 videos; false "
        "alarms "
        + ", ".join(
            f"{d} {sessions['detectors'][d]['first_alarm']}/{videos['detectors'][d]['first_alarm']}"
            for d in detectors
        )
    )
    return {"sessions": sessions, "videos": videos}


def _line(run: RunResult) -> str:
    what = run.defense if run.detector is None else f"to the {run.detector} alarm"
    if run.top1_agreement is None:
        return f"{run.attack} ({what}): FAILED: {run.error} (see {run.run_dir})"
    return (
        f"{run.attack} ({what}): {run.clips} clips, {run.paid} paid, top-1 agreement "
        f"{run.top1_agreement:.3f} ({run.wall_seconds} s)"
    )


def _results(
    spec: ScoreboardSpec,
    grid: _Grid,
    detectors: tuple[str, ...],
    policies: dict[str, dict[str, Any]],
    tau: float,
    runs: dict[tuple[str, str, str | None], RunResult],
    alarms: dict[str, dict[str, int | None]],
    benign: dict[str, Any],
    services: Services,
) -> dict[str, Any]:
    attacks: dict[str, Any] = {}
    for attack in spec.attacks:
        full = runs[(attack, "none", None)]
        row: dict[str, Any] = {
            "recipe": grid.recipes[attack],
            "defenses": {d: runs[(attack, d, None)].to_dict() for d in spec.defenses},
            "detectors": {},
        }
        replayed = alarms.get(attack)  # None: the undefended run failed, nothing to replay
        for detector in detectors:
            rerun = runs.get((attack, "none", detector))
            row["detectors"][detector] = {
                "first_alarm": None if replayed is None else replayed[detector],
                "agreement_at_alarm": (full if rerun is None else rerun).top1_agreement,
                "alarm_run": None if rerun is None else rerun.to_dict(),
                # The rerun's queries: the attack's own stream cut at the alarm, or (a stream
                # that depends on the budget) the undefended run's paid clips up to it.
                "alarm_stream": "own" if prefix_stable(grid.recipes[attack]) else "paid prefix",
            }
        attacks[attack] = row
    sessions, videos = benign["sessions"], benign["videos"]
    return {
        "scoreboard": "vidsteal attack x detector x defense",
        "measured_at": datetime.now(UTC).isoformat(),
        "git_commit": git_commit(REPO),
        "command": " ".join(["python -m vidsteal", *sys.argv[1:]]),
        "config": spec.to_dict(),
        "victim": services.model_config.model_tag,
        "eval": {"source": "synthactions", "seed": 424242, "clips": spec.eval_clips},
        "student": _student(spec),
        "train": TRAIN if spec.epochs is None else {**TRAIN, "epochs": spec.epochs},
        "am": {"fraction": AM_FRACTION, "tau": tau, "calibration_clips": spec.calibration_clips},
        "detectors": list(detectors),
        "defenses": policies,
        "attacks": attacks,
        "benign": benign,
        "benign_columns": {
            "defenses": sessions["defenses"],
            "detectors": {
                d: {
                    "false_alarm_sessions": sessions["detectors"][d]["false_alarm"],
                    "false_alarm_videos": videos["detectors"][d]["false_alarm"],
                    "session_clips": sessions["queries"],
                    "videos": videos["queries"],
                }
                for d in detectors
            },
        },
    }
