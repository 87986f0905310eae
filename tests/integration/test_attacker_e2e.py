"""The attacker end to end against the real victim: in process (ASGI) and over real HTTP
(uvicorn + redis-server), including a victim killed and restarted mid-run."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from helpers.services import REPO, LiveVictim, free_port, start_victim
from helpers.victim import budget_of, create_key

from attacker.config import load_config
from attacker.data import TransferSet
from attacker.metrics import AttackerMetrics
from attacker.run import RunHooks, run_attack

EXAMPLES = REPO / "examples"
RESTART_AFTER_S = 3.0  # the victim stays down this long after kill -9 (bench: 8 s, 3,000 queries)


def _config(path: Path, **overrides: Any) -> Any:
    return load_config(path, overrides)


async def _keys(client: httpx.AsyncClient, budget: int, eval_budget: int) -> tuple[dict, dict]:
    attack = await create_key(client, budget=budget, output="probs")
    evaluation = await create_key(client, budget=eval_budget, output="label")
    return attack, evaluation


async def test_run_in_process_spends_exactly_and_a_rerun_pays_nothing(
    victim_transport: httpx.ASGITransport,
    victim_app: httpx.AsyncClient,
    redis_url: str,
    tmp_path: Path,
) -> None:
    attack, evaluation = await _keys(victim_app, budget=96, eval_budget=64)
    config = _config(
        EXAMPLES / "blackbox_affine.yaml",
        **{
            "victim.url": "http://victim",
            "victim.api_key": attack["api_key"],
            "victim.eval_api_key": evaluation["api_key"],
            "budget": 96,
            "redis_url": redis_url,
            "out": str(tmp_path / "run"),
            "train.epochs": 2,
            "eval.clips": 64,
            "eval.points": [0.5, 1.0],
        },
    )
    metrics = AttackerMetrics("e2e")
    port = free_port()
    metrics.serve(port, host="127.0.0.1")
    try:
        report = await run_attack(
            config,
            transport=victim_transport,
            show_progress=False,
            hooks=RunHooks(**metrics.hooks()),
        )
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    finally:
        metrics.close()
    assert 'vidsteal_attacker_queries_paid_total{run="e2e"} 96.0' in scraped
    assert 'vidsteal_attacker_phase{phase="done",run="e2e"} 1.0' in scraped
    assert 'vidsteal_attacker_fidelity{queries="96",run="e2e"}' in scraped
    assert report["collect"]["paid"] == 96 and report["eval"]["paid"] == 64
    assert (await budget_of(victim_app, attack["api_key"]))["spent"] == 96
    assert (await budget_of(victim_app, evaluation["api_key"]))["spent"] == 64
    assert [p["queries"] for p in report["points"]] == [48, 96]
    run = tmp_path / "run"
    for name in (
        "report.json",
        "report.md",
        "fidelity_vs_queries.png",
        "config.resolved.yaml",
        "student/student.safetensors",
        "student/student.json",
    ):
        assert (run / name).is_file(), name
    assert "***" in (run / "config.resolved.yaml").read_text()
    assert attack["api_key"] not in (run / "config.resolved.yaml").read_text()
    assert len(TransferSet(run / "transfer")) == 96

    again = await run_attack(config, transport=victim_transport, show_progress=False)
    assert again["collect"]["paid"] == 0 and again["collect"]["cache_hits"] == 96
    assert again["collect"]["extra"]["replayed_from_previous_run"] == 96
    assert again["eval"]["paid"] == 0
    assert (await budget_of(victim_app, attack["api_key"]))["spent"] == 96
    assert again["final"]["top1_agreement"] == report["final"]["top1_agreement"]


@pytest.mark.parametrize(
    ("example", "output"),
    [("label_only.yaml", "label"), ("blackbox_affine.yaml", "topk"), ("stealth.yaml", "probs")],
)
async def test_each_output_mode_runs_with_its_default_loss(
    victim_transport: httpx.ASGITransport,
    victim_app: httpx.AsyncClient,
    redis_url: str,
    tmp_path: Path,
    example: str,
    output: str,
) -> None:
    attack = await create_key(victim_app, budget=48, output=output, top_k=3)
    evaluation = await create_key(victim_app, budget=32, output="label")
    config = _config(
        EXAMPLES / example,
        **{
            "victim.url": "http://victim",
            "victim.api_key": attack["api_key"],
            "victim.eval_api_key": evaluation["api_key"],
            "budget": 48,
            "redis_url": redis_url,
            "out": str(tmp_path / "run"),
            "train.epochs": 1,
            "eval.clips": 32,
            "eval.points": [1.0],
        },
    )
    report = await run_attack(config, transport=victim_transport, show_progress=False)
    assert report["victim"]["output"] == output
    assert report["collect"]["clips"] == 48 and report["final"]["queries"] == 48
    assert 0.0 <= report["final"]["top1_agreement"] <= 1.0


async def test_cli_against_uvicorn_and_redis_server(
    live_victim: LiveVictim, redis_url: str, tmp_path: Path
) -> None:
    async with httpx.AsyncClient(base_url=live_victim.url) as client:
        attack, evaluation = await _keys(client, budget=64, eval_budget=48)
        command = [
            sys.executable,
            "-m",
            "attacker",
            "run",
            str(EXAMPLES / "blackbox_noise.yaml"),
            "--victim-url",
            live_victim.url,
            "--api-key",
            attack["api_key"],
            "--eval-api-key",
            evaluation["api_key"],
            "--budget",
            "64",
            "--redis-url",
            redis_url,
            "--out",
            str(tmp_path / "run"),
            "--quiet",
        ]
        env = {**os.environ, "VIDSTEAL_API_KEY": "", "VIDSTEAL_EVAL_API_KEY": ""}
        first = await asyncio.to_thread(
            subprocess.run,
            command,
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            timeout=600,
        )
        assert first.returncode == 0, first.stderr[-2000:]
        summary = json.loads(first.stdout.strip().splitlines()[-1])
        assert summary["paid"] == 64 and Path(summary["plot"]).is_file()
        assert (await budget_of(client, attack["api_key"]))["spent"] == 64
        second = await asyncio.to_thread(
            subprocess.run,
            command,
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            timeout=600,
        )
        assert second.returncode == 0, second.stderr[-2000:]
        assert json.loads(second.stdout.strip().splitlines()[-1])["paid"] == 0
        assert (await budget_of(client, attack["api_key"]))["spent"] == 64


def test_cli_reports_a_bad_config_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("budget: 10\nquery: {source: {kind: noise, colour: red}}\n")
    result = subprocess.run(
        [sys.executable, "-m", "attacker", "run", str(bad), "--api-key", "k"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert "colour" in result.stderr


@pytest.mark.slow
async def test_victim_killed_and_restarted_mid_run_loses_no_paid_answer(
    redis_url: str, tmp_path: Path
) -> None:
    env = {"VIDSTEAL_ABANDONED_AFTER_S": "2"}
    victim = start_victim(redis_url, tmp_path / "v1.log", extra_env=env)
    port = victim.port
    async with httpx.AsyncClient(base_url=victim.url) as client:
        attack, evaluation = await _keys(client, budget=320, eval_budget=32)
    restarted: list[LiveVictim] = []
    killed = threading.Event()

    def on_collect(stats: Any) -> None:
        if stats.paid >= 96 and not killed.is_set():
            killed.set()
            victim.process.kill()  # no graceful shutdown: in-flight requests die
            victim.process.wait()

            def restart() -> None:
                time.sleep(RESTART_AFTER_S)  # refused connections first, then 409s, then answers
                restarted.append(
                    start_victim(redis_url, tmp_path / "v2.log", port=port, extra_env=env)
                )

            threading.Thread(target=restart, daemon=True).start()

    config = _config(
        EXAMPLES / "blackbox_noise.yaml",
        **{
            "victim.url": victim.url,
            "victim.api_key": attack["api_key"],
            "victim.eval_api_key": evaluation["api_key"],
            "budget": 320,
            "redis_url": redis_url,
            "out": str(tmp_path / "run"),
            "train.epochs": 1,
            "eval.clips": 32,
            "eval.points": [1.0],
            "query.batch_clips": 16,
            "query.concurrency": 2,
        },
    )
    try:
        report = await run_attack(
            config, hooks=RunHooks(on_collect=on_collect), show_progress=False
        )
    finally:
        victim.stop()
        for v in restarted:
            v.stop()
    assert killed.is_set() and restarted
    collect = report["collect"]
    assert collect["clips"] == 320 and collect["retries"] >= 1
    assert collect["stopped_by"] == "target"  # the same run finished its budget
    store = aioredis.Redis.from_url(redis_url, decode_responses=True)
    spent = int(await store.hget(f"vs:{{{attack['key_id']}}}:key", "spent"))
    await store.aclose()
    assert spent == 320  # every clip charged exactly once, across the crash
    assert collect["paid"] == spent  # the report's paid count is the victim's
    transfer = TransferSet(tmp_path / "run" / "transfer")
    assert len(transfer) == 320 == sum(r.paid for r in transfer.records)
    assert len({r.clip_hash for r in transfer.records}) == 320
