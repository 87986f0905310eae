"""``attacker prune`` on a real run against the real victim app (in process, real Redis): the
pruned student is exported with the requested share of zero weights, the ticket holds the
rewind weights, and agreement is measured on the run's own held-out clips."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from helpers.services import REPO
from helpers.victim import create_key
from safetensors.torch import load_file
from typer.testing import CliRunner

from attacker.cli import app
from attacker.config import load_config
from attacker.data import TransferSet
from attacker.eval.fidelity import EvalSet, evaluate
from attacker.prune.masks import PRUNABLE_TYPES
from attacker.run import run_attack
from attacker.students import load_exported_student

EXAMPLES = REPO / "examples"


@pytest.fixture
async def grey_box_run(
    victim_transport: httpx.ASGITransport,
    victim_app: httpx.AsyncClient,
    redis_url: str,
    tmp_path: Path,
) -> Path:
    """A 128-query grey-box run (5% labelled clips) with 64 labelled evaluation clips."""
    attack = await create_key(victim_app, budget=128, output="probs")
    evaluation = await create_key(victim_app, budget=64, output="label")
    config = load_config(
        EXAMPLES / "greybox_labelled_plus_affine.yaml",
        {
            "victim.url": "http://victim",
            "victim.api_key": attack["api_key"],
            "victim.eval_api_key": evaluation["api_key"],
            "budget": 128,
            "redis_url": redis_url,
            "out": str(tmp_path / "run"),
            "train.epochs": 1,
            "eval.clips": 64,
            "eval.points": [1.0],
        },
    )
    await run_attack(config, transport=victim_transport, show_progress=False)
    return tmp_path / "run"


def _prune(run_dir: Path, *options: str) -> dict[str, object]:
    result = CliRunner().invoke(app, ["prune", str(run_dir), "--quiet", *options])
    assert result.exit_code == 0, result.output
    summary: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return summary


def _zero_share(student: torch.nn.Module) -> float:
    weights = [m.weight.detach() for m in student.modules() if isinstance(m, PRUNABLE_TYPES)]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


async def test_prune_exports_a_sparse_student_rewound_and_measured(grey_box_run: Path) -> None:
    run = grey_box_run
    summary = _prune(run, "--rounds", "2", "--rate", "0.5", "--epochs", "1", "--rewind-step", "0")
    report = json.loads((run / "prune" / "prune.json").read_text())
    for name in ("prune.md", "prune.png", "student/student.safetensors", "ticket.safetensors"):
        assert (run / "prune" / name).is_file(), name

    # Sparsity: 1 - 0.5^2 of the conv/linear weights are exact zeros in the exported file.
    pruned = load_exported_student(run / "prune" / "student")
    assert _zero_share(pruned) == pytest.approx(0.75, abs=1e-4)
    assert summary["final_sparsity"] == pytest.approx(0.75, abs=1e-4)
    assert [r["round"] for r in report["rounds"]] == [None, 0, 1, 2]
    assert [round(r["sparsity"], 3) for r in report["rounds"]] == [0.0, 0.0, 0.5, 0.75]

    # Agreement is measured on the run's eval_set.npz: the dense row is the run's own number,
    # and the exported pruned student scores what the last round reported.
    run_report = json.loads((run / "report.json").read_text())
    eval_set = EvalSet.load(run / "eval_set.npz")
    assert len(eval_set) == report["eval"]["clips"] == 64
    assert report["rounds"][0]["top1_agreement"] == run_report["final"]["top1_agreement"]
    assert evaluate(pruned, eval_set).top1_agreement == report["rounds"][-1]["top1_agreement"]
    assert all(0.0 <= r["top1_agreement"] <= 1.0 for r in report["rounds"])

    # The labelled subset is in the transfer set the rounds train on.
    labelled = sum(r.true_label is not None for r in TransferSet(run / "transfer").records)
    assert report["transfer"]["labelled"] == labelled > 0
    assert report["transfer"]["true_label_weight"] == 1.0

    # Rewinding to step 0 of a run started from the run's student: the ticket is that student's
    # weights under the final mask, and its zeros are exactly the exported student's zeros.
    ticket = load_file(str(run / "prune" / "ticket.safetensors"))
    dense = load_exported_student(run / "student").state_dict()
    exported = pruned.state_dict()
    assert report["rewind_taken_at"] == 0
    for module in (n for n, m in pruned.named_modules() if isinstance(m, PRUNABLE_TYPES)):
        key = f"{module}.weight"
        mask = ticket[f"mask.{module}"].bool()
        assert torch.equal(mask, exported[key] != 0)
        assert torch.equal(ticket[f"weights.{key}"], dense[key] * mask)
        assert not torch.equal(exported[key], ticket[f"weights.{key}"])  # retrained after
    for key in ("backbone.features.1.running_mean", "head.bias"):
        assert torch.equal(ticket[f"weights.{key}"], dense[key])


async def test_prune_rewinds_to_the_weights_after_k_steps(grey_box_run: Path) -> None:
    run = grey_box_run
    _prune(run, "--rounds", "1", "--rate", "0.2", "--epochs", "2", "--rewind-step", "3")
    report = json.loads((run / "prune" / "prune.json").read_text())
    assert report["train"]["steps"] == 4 and report["rewind_taken_at"] == 3
    ticket = load_file(str(run / "prune" / "ticket.safetensors"))
    dense = load_exported_student(run / "student").state_dict()
    key = "head.weight"
    kept = ticket["mask.head"].bool()
    # Three steps of round 0 moved the weights away from the run's student before the copy.
    assert not torch.equal(ticket[f"weights.{key}"][kept], dense[key][kept])
    assert report["summary"]["final_sparsity"] == pytest.approx(0.2, abs=1e-4)
    assert np.isfinite(report["rounds"][-1]["top1_agreement"])


def test_prune_refuses_a_directory_that_is_not_a_run_in_one_line(tmp_path: Path) -> None:
    missing = CliRunner().invoke(app, ["prune", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and missing.stderr.count("\n") == 1
    assert missing.stderr.startswith("error: ") and "not a directory" in missing.stderr
    half = tmp_path / "half"  # a config but no transfer set, eval set or student
    half.mkdir()
    shutil.copy(EXAMPLES / "blackbox_affine.yaml", half / "config.resolved.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "attacker", "prune", str(half)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: ") and "eval_set.npz" in result.stderr


async def test_lr_rewinding_lands_on_the_target_and_joins_the_run_report(
    grey_box_run: Path,
) -> None:
    run = grey_box_run
    summary = _prune(
        run, "--rewind", "lr", "--rounds", "2", "--target-sparsity", "0.8", "--epochs", "1"
    )
    report = json.loads((run / "prune" / "prune.json").read_text())
    rows = report["rounds"]
    assert report["settings"]["rewind"] == "lr"
    assert report["round_rate"] == pytest.approx(1 - 0.2**0.5, abs=1e-6)
    assert [r["round"] for r in rows] == [None, 0, 1, 2]
    # Round 0 is the run's student as it is; rounds 1 and 2 retrain (from the kept weights).
    assert rows[1]["steps"] == 0 and rows[1]["top1_agreement"] == rows[0]["top1_agreement"]
    assert rows[2]["steps"] == rows[3]["steps"] == report["train"]["steps"] > 0
    assert rows[3]["sparsity"] >= 0.8 and summary["final_sparsity"] >= 0.8
    pruned = load_exported_student(run / "prune" / "student")
    assert 0.8 <= _zero_share(pruned) < 0.8 + 1e-4
    ticket = load_file(str(run / "prune" / "ticket.safetensors"))
    assert ticket and all(k.startswith("mask.") for k in ticket)  # no rewind point to keep
    assert report["rewind_taken_at"] is None

    # The run's own report now carries the pruning table, and `attacker report` keeps it.
    run_report = json.loads((run / "report.json").read_text())
    section = run_report["prune"]
    assert [(r["round"], r["sparsity"], r["top1_agreement"]) for r in section["rows"]] == [
        (r["round"], r["sparsity"], r["top1_agreement"]) for r in rows
    ]
    assert section["settings"]["rewind"] == "lr" and run_report["final"]["queries"] == 128
    for _ in range(2):
        markdown = (run / "report.md").read_text()
        assert "## Pruning (`attacker prune`)" in markdown
        table = markdown.split("## Pruning", 1)[1]
        assert f"| 2 | {100 * rows[3]['sparsity']:.1f}% | " in table
        dense = rows[0]
        assert (
            f"| run's student | 0.0% | {dense['remaining_weights']:,} | "
            f"{100 * dense['top1_agreement']:.1f}% |"
        ) in table
        redo = CliRunner().invoke(app, ["report", str(run)])
        assert redo.exit_code == 0, redo.output
