"""``attacker transfer`` against the real victim app (real Redis; in process over ASGI, and the
CLI against uvicorn): queries are paid exactly once and within budget, a rerun pays nothing, and
the success rates are those of the victim's own answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis.asyncio as aioredis
import torch
from helpers.services import REPO, LiveVictim
from helpers.victim import budget_of, create_key, npy_request
from typer.testing import CliRunner

from attacker.adversarial import InsufficientBudget
from attacker.adversarial.command import TransferRequest, run_transfer_command
from attacker.adversarial.differentiable import student_logits_fn
from attacker.adversarial.stage import craft, noise_control, starting_clips
from attacker.cli import app
from attacker.sources import ClipShape
from attacker.students import create_student, export_student, load_exported_student
from shared.synthactions import CLASS_NAMES

N = 6
EPS = [4.0, 8.0]
PERTURBATIONS = ["per-frame", "shared"]
QUERIES = N * (1 + 2 * len(EPS) * len(PERTURBATIONS))  # clean + (PGD, noise) per setting


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run directory holding an exported clone (a tiny3d student, untrained)."""
    torch.manual_seed(0)
    student = create_student("tiny3d", num_classes=16, labels=CLASS_NAMES)
    with torch.no_grad():
        student.head.weight.mul_(40.0)
    run = tmp_path / "run"
    export_student(student, run / "student")
    return run


def _request(run: Path, api_key: str, redis_url: str, **overrides: object) -> TransferRequest:
    options: dict[str, object] = {
        "eps": EPS,
        "steps": 3,
        "perturbations": PERTURBATIONS,
        "n": N,
        "seed": 5,
        "victim_url": "http://victim",
        "api_key": api_key,
        "redis_url": redis_url,
        **overrides,
    }
    return TransferRequest.build(run, **options)  # type: ignore[arg-type]


async def _labels(client: httpx.AsyncClient, clips: np.ndarray) -> np.ndarray:
    """The victim's top-1 for clips, asked directly with a fresh key (no attacker code)."""
    key = await create_key(client, budget=len(clips), output="label")
    response = await client.post("/v1/classify", **npy_request(clips, key["api_key"]))
    assert response.status_code == 200, response.text
    return np.array([r["index"] for r in response.json()["results"]])


async def test_transfer_pays_exactly_once_and_reports_the_victims_answers(
    victim_transport: httpx.ASGITransport,
    victim_app: httpx.AsyncClient,
    redis_url: str,
    run_dir: Path,
) -> None:
    key = await create_key(victim_app, budget=QUERIES, output="probs")
    request = _request(run_dir, key["api_key"], redis_url)
    store = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        summary = await run_transfer_command(
            request, transport=victim_transport, redis=store, show_progress=False
        )
        assert summary["paid"] == QUERIES and summary["cache_hits"] == 0
        assert (await budget_of(victim_app, key["api_key"]))["spent"] == QUERIES
        report = json.loads((run_dir / "transfer_attack" / "transfer.json").read_text())
        assert (run_dir / "transfer_attack" / "transfer.md").read_text().startswith("# Transfer")
        assert report["queries"]["paid"] == QUERIES == report["queries"]["distinct"]
        assert report["budget"] == {"spent_before": 0, "spent_after": QUERIES}
        assert [(r["eps"], r["perturbation"]) for r in report["results"]] == [
            (e, p) for p in PERTURBATIONS for e in EPS
        ]

        # The rates are the victim's: recompute them from its answers to the same clips.
        start = starting_clips(ClipShape(16, 32, 32), N, request.source_seed)
        victim_clean = await _labels(victim_app, start.clips)
        eligible = victim_clean == start.labels
        assert report["starting_clips"]["victim_correct"] == int(eligible.sum())
        clone = student_logits_fn(load_exported_student(run_dir / "student"))
        for entry, options in zip(report["results"], request.settings, strict=True):
            adversarial = craft(clone, start, options, seed=request.seed)
            noise = noise_control(start, options, seed=request.seed)
            for clips in (adversarial, noise):
                change = np.abs(clips.astype(np.int16) - start.clips)
                assert clips.dtype == np.uint8 and change.max() <= options.eps
            victim_adv = await _labels(victim_app, adversarial)
            victim_noise = await _labels(victim_app, noise)
            assert entry["transfer"]["eligible"] == int(eligible.sum())
            assert entry["transfer"]["flipped"] == int(
                (eligible & (victim_adv != start.labels)).sum()
            )
            assert entry["noise"]["flipped"] == int(
                (eligible & (victim_noise != start.labels)).sum()
            )
            assert entry["max_abs_change"]["pgd"] <= options.eps

        again = await run_transfer_command(
            request, transport=victim_transport, redis=store, show_progress=False
        )
    finally:
        await store.aclose()
    assert again["paid"] == 0 and again["cache_hits"] == QUERIES
    assert again["results"] == summary["results"]
    assert (await budget_of(victim_app, key["api_key"]))["spent"] == QUERIES


def _run_report(run: Path) -> None:
    """A run's report.json as ``attacker run`` writes it (the fields report.md shows)."""
    point = {"queries": 64, "top1_agreement": 0.5, "top5_agreement": 0.9, "accuracy": 0.5}
    report = {
        "name": "clone",
        "victim": {"url": "http://victim", "model": "m", "output": "probs", "top_k": None},
        "budget": 64,
        "source": "synthactions",
        "loss": "kl",
        "student": {"architecture": "tiny3d", "export": str(run / "student")},
        "collect": {
            "clips": 64, "paid": 64, "cache_hits": 0, "retries": 0, "stopped_by": "target",
        },
        "eval": {"clips": 16, "source": "synthactions", "victim_accuracy": 1.0},
        "points": [point],
        "final": point,
    }  # fmt: skip
    (run / "report.json").write_text(json.dumps(report))


async def test_transfer_table_joins_the_run_report(
    victim_transport: httpx.ASGITransport,
    victim_app: httpx.AsyncClient,
    redis_url: str,
    run_dir: Path,
) -> None:
    _run_report(run_dir)
    key = await create_key(victim_app, budget=QUERIES, output="probs")
    store = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await run_transfer_command(
            _request(run_dir, key["api_key"], redis_url),
            transport=victim_transport,
            redis=store,
            show_progress=False,
        )
        measured = json.loads((run_dir / "transfer_attack" / "transfer.json").read_text())
        section = json.loads((run_dir / "report.json").read_text())["transfer"]
        assert section["starting_clips"] == N and section["definition"] == measured["definition"]
        assert [(r["eps"], r["perturbation"]) for r in section["rows"]] == [
            (e, p) for p in PERTURBATIONS for e in EPS
        ]
        for row, entry in zip(section["rows"], measured["results"], strict=True):
            assert row["transfer"] == entry["transfer"]["rate"]
            assert row["noise"] == entry["noise"]["rate"]
            assert row["ratio"] == entry["ratio"]
            assert row["clone_white_box"] == entry["clone_white_box"]["rate"]
            assert row["victim_white_box"] is None  # the command cannot measure it
        markdown = (run_dir / "report.md").read_text()
        assert markdown.startswith("# Extraction report: clone")
        table = markdown.split("## Transfer attack (`attacker transfer`)", 1)[1]
        assert len([line for line in table.splitlines() if line.startswith("| 4 |")]) == 2

        # A later measurement of one setting (answers now cached) replaces that row only.
        marked = dict(section["rows"][0], transfer=-1.0)
        report = json.loads((run_dir / "report.json").read_text())
        report["transfer"]["rows"][0] = marked
        (run_dir / "report.json").write_text(json.dumps(report))
        again = await run_transfer_command(
            _request(run_dir, key["api_key"], redis_url, eps=[8.0], perturbations=["shared"]),
            transport=victim_transport,
            redis=store,
            show_progress=False,
        )
    finally:
        await store.aclose()
    assert again["paid"] == 0
    rows = json.loads((run_dir / "report.json").read_text())["transfer"]["rows"]
    assert rows[0] == marked and rows[1:] == section["rows"][1:]


async def test_budget_is_checked_before_any_query(
    victim_transport: httpx.ASGITransport,
    victim_app: httpx.AsyncClient,
    redis_url: str,
    run_dir: Path,
) -> None:
    key = await create_key(victim_app, budget=QUERIES - 1, output="probs")
    store = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        with pytest.raises(
            InsufficientBudget, match=f"{QUERIES} queries needed.*has {QUERIES - 1}"
        ):
            await run_transfer_command(
                _request(run_dir, key["api_key"], redis_url),
                transport=victim_transport,
                redis=store,
                show_progress=False,
            )
    finally:
        await store.aclose()
    assert (await budget_of(victim_app, key["api_key"]))["spent"] == 0
    assert not (run_dir / "transfer_attack").exists()


def test_bad_run_dir_and_options_fail_in_one_line(run_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    cases = [
        ([str(tmp_path / "missing")], "is not a run directory"),
        ([str(tmp_path)], "has no exported student"),
        ([str(run_dir), "--eps", "0"], "eps must be in 1..255"),
        ([str(run_dir), "--perturbation", "per-pixel"], "perturbation must be one of"),
        ([str(run_dir), "--steps", "0"], "steps must be at least 1"),
        ([str(run_dir), "--n", "0"], "--n must be at least 1"),
        ([str(run_dir), "--api-key", "k"], "no victim URL"),
        ([str(run_dir), "--victim-url", "http://v"], "no API key"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["transfer", *args], env={"VIDSTEAL_API_KEY": ""})
        assert result.exit_code == 2, (args, result.output)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), result.output
        assert message in lines[0], (message, lines[0])


async def test_cli_against_uvicorn(live_victim: LiveVictim, redis_url: str, run_dir: Path) -> None:
    async with httpx.AsyncClient(base_url=live_victim.url) as client:
        key = await create_key(client, budget=3 * 3, output="probs")
        command = [
            sys.executable, "-m", "attacker", "transfer", str(run_dir),
            "--n", "3", "--eps", "4", "--steps", "2",
            "--victim-url", live_victim.url, "--redis-url", redis_url, "--quiet",
        ]  # fmt: skip
        env = {**os.environ, "VIDSTEAL_API_KEY": key["api_key"]}
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        assert summary["paid"] == 9
        assert (await budget_of(client, key["api_key"]))["spent"] == 9
        again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout.strip().splitlines()[-1])["paid"] == 0
        assert (await budget_of(client, key["api_key"]))["spent"] == 9
