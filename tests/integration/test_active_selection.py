"""Active query selection end to end against the real victim app (ASGI, real Redis): rounds are
budget-exact, the student picks from a larger unpaid pool, a rerun pays nothing, and the bandit
learns between the parts of a mix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers.services import REPO
from helpers.victim import budget_of, create_key

from attacker.config import ConfigError, load_config
from attacker.data import TransferSet
from attacker.run import run_attack

EXAMPLE = REPO / "examples" / "active_selection.yaml"


async def _config(
    victim_app: httpx.AsyncClient,
    redis_url: str,
    out: Path,
    budget: int,
    *,
    key_budget: int | None = None,
    **overrides: Any,
) -> tuple[Any, dict[str, Any]]:
    attack = await create_key(victim_app, budget=key_budget or budget, output="probs")
    evaluation = await create_key(victim_app, budget=32, output="label")
    config = load_config(
        EXAMPLE,
        {
            "victim.url": "http://victim",
            "victim.api_key": attack["api_key"],
            "victim.eval_api_key": evaluation["api_key"],
            "budget": budget,
            "redis_url": redis_url,
            "out": str(out),
            "train.epochs": 1,
            "eval.clips": 32,
            "query.batch_clips": 8,
            "query.select.rounds": 3,
            "query.select.pool_factor": 3,
            **overrides,
        },
    )
    return config, attack


@pytest.mark.parametrize("strategy", ["entropy", "margin", "coreset", "balanced", "random"])
async def test_rounds_spend_exactly_and_a_rerun_pays_nothing(
    victim_transport: httpx.ASGITransport,
    victim_app: httpx.AsyncClient,
    redis_url: str,
    tmp_path: Path,
    strategy: str,
) -> None:
    config, attack = await _config(
        victim_app, redis_url, tmp_path / "run", 48, **{"query.select.strategy": strategy}
    )
    report = await run_attack(config, transport=victim_transport, show_progress=False)
    assert report["collect"]["paid"] == 48
    assert (await budget_of(victim_app, attack["api_key"]))["spent"] == 48
    assert [p["queries"] for p in report["points"]] == [16, 32, 48]
    select = report["collect"]["extra"]["select"]
    assert [r["paid"] for r in select["rounds_run"]] == [16, 16, 16]
    # Rounds after the first pick 16 of a 3x pool the student scored, unpaid.
    assert select["pools"][1:] == [{"pool": 48, "chosen": 16}] * 2
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert f"Query selection: **{strategy}**, 3 rounds, 3 unpaid candidates" in markdown
    per_class = report["final"]["class_agreement"]
    assert len(per_class) == len(report["victim"]["labels"]) == report["victim"]["num_classes"]
    assert "Classes the clone agrees on least (at 48 queries" in markdown
    transfer = TransferSet(tmp_path / "run" / "transfer")
    assert len(transfer) == 48 and len({r.clip_hash for r in transfer.records}) == 48

    again = await run_attack(config, transport=victim_transport, show_progress=False)
    assert again["collect"]["paid"] == 0 and again["collect"]["cache_hits"] == 48
    assert (await budget_of(victim_app, attack["api_key"]))["spent"] == 48
    assert [r.clip_hash for r in TransferSet(tmp_path / "run" / "transfer").records] == [
        r.clip_hash for r in transfer.records
    ]


async def test_a_short_budget_stops_the_rounds_exactly(
    victim_transport: httpx.ASGITransport,
    victim_app: httpx.AsyncClient,
    redis_url: str,
    tmp_path: Path,
) -> None:
    config, attack = await _config(victim_app, redis_url, tmp_path / "run", 48, key_budget=20)
    report = await run_attack(config, transport=victim_transport, show_progress=False)
    assert report["collect"]["paid"] == 20
    assert (await budget_of(victim_app, attack["api_key"]))["spent"] == 20
    assert report["collect"]["stopped_by"] in {"budget", "victim-exhausted"}
    assert report["points"][-1]["queries"] == 20


async def test_bandit_draws_from_the_parts_of_a_mix_and_records_its_policy(
    victim_transport: httpx.ASGITransport,
    victim_app: httpx.AsyncClient,
    redis_url: str,
    tmp_path: Path,
) -> None:
    mix = {
        "kind": "mix",
        "parts": [
            {"source": {"kind": "noise"}, "weight": 1},
            {"source": {"kind": "stacked_affine", "layered": 0.8}, "weight": 1},
        ],
    }
    config, attack = await _config(
        victim_app,
        redis_url,
        tmp_path / "run",
        48,
        **{"query.source": mix, "query.select.strategy": "bandit"},
    )
    report = await run_attack(config, transport=victim_transport, show_progress=False)
    assert report["collect"]["paid"] == 48
    assert (await budget_of(victim_app, attack["api_key"]))["spent"] == 48
    history = report["collect"]["extra"]["select"]["bandit"]
    assert len(history) == 2  # rounds 2 and 3 were rewarded (round 1 had no student yet)
    parts = {r.recipe["part"] for r in TransferSet(tmp_path / "run" / "transfer").records}
    assert parts == {0, 1}


@pytest.mark.parametrize("strategy", ["balanced", "entropy"])
async def test_a_mix_keeps_its_weights_under_selection(
    victim_transport: httpx.ASGITransport,
    victim_app: httpx.AsyncClient,
    redis_url: str,
    tmp_path: Path,
    strategy: str,
) -> None:
    """Grey box with selection: the strategy picks within each part of the mix, so the labelled
    natural clips stay exactly their share of every round, whatever the student prefers."""
    mix = {
        "kind": "mix",
        "parts": [
            {"source": {"kind": "synthactions", "seed": 7, "labelled": True}, "weight": 0.25},
            {"source": {"kind": "stacked_affine", "layered": 0.8}, "weight": 0.75},
        ],
    }
    config, attack = await _config(
        victim_app,
        redis_url,
        tmp_path / "run",
        48,
        **{"query.source": mix, "query.select.strategy": strategy},
    )
    report = await run_attack(config, transport=victim_transport, show_progress=False)
    assert report["collect"]["paid"] == 48
    assert (await budget_of(victim_app, attack["api_key"]))["spent"] == 48
    records = TransferSet(tmp_path / "run" / "transfer").records
    for start in (0, 16, 32):  # each round of 16: 4 natural, 12 affine
        parts = [r.recipe["part"] for r in records[start : start + 16]]
        assert parts.count(0) == 4 and parts.count(1) == 12
    assert all((r.true_label is not None) == (r.recipe["part"] == 0) for r in records)
    pools = report["collect"]["extra"]["select"]["pools"]
    # Rounds after the first choose 4 of 12 natural and 12 of 36 affine candidates.
    later_round = {
        "pool": 48,
        "chosen": 16,
        "parts": {
            "synthactions": {"pool": 12, "chosen": 4},
            "stacked_affine": {"pool": 36, "chosen": 12},
        },
    }
    assert pools[1:] == [later_round, later_round]

    again = await run_attack(config, transport=victim_transport, show_progress=False)
    assert again["collect"]["paid"] == 0 and again["collect"]["cache_hits"] == 48
    rerun = TransferSet(tmp_path / "run" / "transfer").records
    assert [r.clip_hash for r in rerun] == [r.clip_hash for r in records]


def test_bandit_without_a_mix_and_selection_with_stealth_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="bandit chooses between the parts of a mix"):
        load_config(
            EXAMPLE,
            {"query.select.strategy": "bandit", "victim.api_key": "k", "victim.eval_api_key": "e"},
        )
    with pytest.raises(ConfigError, match="enable one of them"):
        load_config(
            EXAMPLE,
            {
                "victim.api_key": "k",
                "victim.eval_api_key": "e",
                "stealth.enabled": True,
                "stealth.natural": {"kind": "synthactions", "seed": 1},
            },
        )
