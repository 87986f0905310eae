"""The data-free attack end to end against the real victim app (in process, real Redis): the
budget is spent exactly with every probe paid, a rerun pays nothing, a larger budget resumes from
the checkpoint, and keys answering top-k or labels are refused before any query."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
import yaml
from helpers.services import REPO
from helpers.victim import budget_of, create_key

from attacker.config import validate_config
from attacker.data import TransferSet
from attacker.datafree.answers import DataFreeError
from attacker.run import run_attack
from attacker.stages.datafree import STATE_FILE

EXAMPLE = REPO / "examples" / "datafree_generator.yaml"
# One round: 6 generated clips x (1 + 2 probes) + 1 student step of 8 clips = 26 queries.
TINY = {
    "batch": 6,
    "directions": 2,
    "student_steps": 1,
    "student_batch": 8,
    "checkpoint_every": 40,
    "generator": {"name": "motion", "latent_dim": 8, "width": 8},
}


def _config(tmp_path: Path, redis_url: str, attack: str, evaluation: str, budget: int) -> Any:
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["query"]["datafree"] = {**raw["query"]["datafree"], **TINY}
    raw.update(
        budget=budget,
        redis_url=redis_url,
        out=str(tmp_path / "run"),
        victim={"url": "http://victim", "api_key": attack, "eval_api_key": evaluation},
    )
    raw["train"]["epochs"] = 1
    raw["eval"].update(clips=16, points=[1.0])
    return validate_config(raw)


def _roles(run: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in TransferSet(run / "transfer").records:
        counts[record.recipe["role"]] = counts.get(record.recipe["role"], 0) + 1
    return counts


async def test_datafree_spends_exactly_counts_probes_reruns_free_and_resumes(
    victim_transport: httpx.ASGITransport,
    victim_app: httpx.AsyncClient,
    redis_url: str,
    tmp_path: Path,
) -> None:
    attack = await create_key(victim_app, budget=100, output="probs")
    evaluation = await create_key(victim_app, budget=16, output="label")
    # 75 = two whole rounds (52) + a generator step (18) + a student step cut to 5 of 8 clips.
    config = _config(tmp_path, redis_url, attack["api_key"], evaluation["api_key"], budget=75)
    report = await run_attack(config, transport=victim_transport, show_progress=False)
    run = tmp_path / "run"
    assert report["source"] == "datafree"
    assert report["collect"]["paid"] == 75
    assert (await budget_of(victim_app, attack["api_key"]))["spent"] == 75
    roles = _roles(run)
    assert sum(roles.values()) == 75 and len(TransferSet(run / "transfer")) == 75
    # Every generated clip of a generator step came with its two paid probes.
    assert roles["probe"] == 2 * roles["generated"] and roles["student"] == 8 + 8 + 5
    summary = report["collect"]["extra"]["datafree"]
    assert summary["probe_queries"] == roles["probe"] == 36
    assert (run / STATE_FILE).is_file() and (run / "report.json").is_file()

    again = await run_attack(config, transport=victim_transport, show_progress=False)
    assert again["collect"]["paid"] == 0 and again["collect"]["cache_hits"] == 75
    assert again["collect"]["extra"]["replayed_from_previous_run"] == 75
    assert (await budget_of(victim_app, attack["api_key"]))["spent"] == 75
    assert again["final"]["top1_agreement"] == report["final"]["top1_agreement"]

    # A larger budget resumes from the checkpoint: the first 75 answers are replayed from the
    # cache, only the 25 new queries are paid, and the key ends exactly at its budget.
    bigger = config.model_copy(update={"budget": 100})
    more = await run_attack(bigger, transport=victim_transport, show_progress=False)
    assert more["collect"]["extra"]["datafree"]["resumed_at_clips"] == 75
    assert more["collect"]["paid"] == 25 and more["collect"]["cache_hits"] == 75
    assert (await budget_of(victim_app, attack["api_key"]))["spent"] == 100
    assert len(TransferSet(run / "transfer")) == 100


async def test_datafree_with_replay_and_cosine_spends_exactly_and_trains_on_old_answers(
    victim_transport: httpx.ASGITransport,
    victim_app: httpx.AsyncClient,
    redis_url: str,
    tmp_path: Path,
) -> None:
    attack = await create_key(victim_app, budget=60, output="probs")
    evaluation = await create_key(victim_app, budget=16, output="label")
    config = _config(tmp_path, redis_url, attack["api_key"], evaluation["api_key"], budget=60)
    settings = config.query.datafree.model_copy(
        update={"replay_size": 32, "replay_steps": 2, "student_schedule": "cosine"}
    )
    config = config.model_copy(
        update={"query": config.query.model_copy(update={"datafree": settings})}
    )
    report = await run_attack(config, transport=victim_transport, show_progress=False)
    assert report["collect"]["paid"] == 60
    assert (await budget_of(victim_app, attack["api_key"]))["spent"] == 60  # replay pays nothing
    state = torch.load(tmp_path / "run" / STATE_FILE, weights_only=True)
    replayed = [h["replay_loss"] for h in state["history"] if "replay_loss" in h]
    assert replayed and all(loss >= 0 for loss in replayed)
    # The cosine schedule left the student's learning rate near its floor at the budget's end.
    lr = state["student_opt"]["param_groups"][0]["lr"]
    assert lr < 0.2 * settings.student_lr


@pytest.mark.parametrize("output", ["topk", "label"])
async def test_datafree_refuses_topk_and_label_keys_before_paying(
    victim_transport: httpx.ASGITransport,
    victim_app: httpx.AsyncClient,
    redis_url: str,
    tmp_path: Path,
    output: str,
) -> None:
    attack = await create_key(victim_app, budget=50, output=output, top_k=3)
    evaluation = await create_key(victim_app, budget=16, output="label")
    config = _config(tmp_path, redis_url, attack["api_key"], evaluation["api_key"], budget=50)
    with pytest.raises(DataFreeError, match="needs the victim's probabilities or logits"):
        await run_attack(config, transport=victim_transport, show_progress=False)
    assert (await budget_of(victim_app, attack["api_key"]))["spent"] == 0
