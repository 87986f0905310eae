"""Pre-training on the source's recipes (``train.pretext``) in a real run against the victim app
(ASGI, real Redis): it happens once, before the first point, costs no query, is reported with the
point it preceded, and a rerun loads it from the cache."""

from __future__ import annotations

from pathlib import Path

import httpx
from helpers.services import REPO
from helpers.victim import budget_of, create_key

from attacker.config import load_config
from attacker.run import run_attack


async def test_pretext_runs_once_unpaid_and_a_rerun_loads_it(
    victim_transport: httpx.ASGITransport,
    victim_app: httpx.AsyncClient,
    redis_url: str,
    tmp_path: Path,
) -> None:
    attack = await create_key(victim_app, budget=48, output="probs")
    evaluation = await create_key(victim_app, budget=32, output="label")
    config = load_config(
        REPO / "examples" / "active_selection.yaml",
        {
            "victim.url": "http://victim",
            "victim.api_key": attack["api_key"],
            "victim.eval_api_key": evaluation["api_key"],
            "budget": 48,
            "redis_url": redis_url,
            "out": str(tmp_path / "run"),
            "train.epochs": 1,
            "train.pretext": {"steps": 4, "clips": 60, "batch_size": 8},
            "eval.clips": 32,
            "query.batch_clips": 8,
            "query.select.rounds": 3,
            "query.select.pool_factor": 2,
        },
    )
    report = await run_attack(config, transport=victim_transport, show_progress=False)
    assert report["collect"]["paid"] == 48
    assert (await budget_of(victim_app, attack["api_key"]))["spent"] == 48
    first, *later = report["points"]
    pretext = first["pretext"]
    assert pretext["steps"] == 4 and pretext["clips"] == 60 and pretext["cached"] is False
    assert "layered" in pretext["factor_accuracy"]  # the layered stacked-affine source's factors
    assert all("pretext" not in point for point in later)  # one student, pre-trained once
    cached = list((tmp_path / "run" / "checkpoints").glob("pretext-*.pt"))
    assert len(cached) == 1

    again = await run_attack(config, transport=victim_transport, show_progress=False)
    assert again["collect"]["paid"] == 0
    assert again["points"][0]["pretext"] == {**pretext, "cached": True}
