"""The scoreboard: request sizes and the paid-stream replay, detectors observing a replayed
stream with real Redis, the tables and heat maps, and the small version end to end (real
uvicorn victim, real redis-server, real attacker runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from attacker.data import TransferManifest, TransferSet, TransferSetWriter
from vidsteal.scoreboard import ScoreboardSpec, SpecError, run_scoreboard, write_outputs
from vidsteal.scoreboard.attacks import (
    STUDENT,
    prefix_stable,
    recipe_without_stream,
    scoreboard_attacks,
)
from vidsteal.scoreboard.panel import DetectorPanel, available_detectors, replay_requests
from vidsteal.scoreboard.render import agreement_matrix, alarm_matrix, markdown
from vidsteal.scoreboard.streams import (
    paid_batches,
    realistic_benign,
    request_sizes,
    write_prefix,
)


def test_request_sizes_follow_the_collector_chunks_and_active_rounds() -> None:
    assert request_sizes(100, 32) == [32, 32, 32, 4]
    assert request_sizes(64, 32) == [32, 32]
    # Active selection: a new chunk starts at each round (rounds of 50 and 50).
    assert request_sizes(100, 32, rounds=2) == [32, 18, 32, 18]
    assert request_sizes(0, 32) == []


def _transfer(root: Path, paid: list[bool]) -> Path:
    manifest = TransferManifest(
        victim={"url": "http://victim"}, output="probs", labels=["a"], clip_shape=[2, 4, 4, 3]
    )
    with TransferSetWriter(root, manifest) as writer:
        for i, was_paid in enumerate(paid):
            clip = np.full((2, 4, 4, 3), i, dtype=np.uint8)
            writer.append(
                clip,
                clip_hash=f"h{i}",
                recipe={"i": i},
                result={"index": 0, "label": "a", "probs": [1.0]},
                true_label=None,
                paid=was_paid,
            )
    return root


def test_paid_batches_replay_only_paid_clips_in_order(tmp_path: Path) -> None:
    root = _transfer(tmp_path / "t", [True, False, True, True, True])  # clip 1: a cache hit
    batches = list(paid_batches(root, [3, 1]))
    assert [b.shape[0] for b in batches] == [3, 1]
    assert [int(c[0, 0, 0, 0]) for b in batches for c in b] == [0, 2, 3, 4]
    with pytest.raises(ValueError, match="more paid clips"):
        list(paid_batches(root, [3]))
    with pytest.raises(ValueError, match="fewer paid clips"):
        list(paid_batches(root, [3, 3]))


def test_prefix_holds_the_first_paid_clips_as_the_npz_source_reads_them(tmp_path: Path) -> None:
    from attacker.sources import ClipShape, build_source
    from shared.hashing import clip_hash

    root = _transfer(tmp_path / "t", [True, False, True, True])
    path = write_prefix(root, 2, tmp_path / "p.npz")
    source = build_source({"kind": "npz", "path": str(path)}, shape=ClipShape(2, 4, 4), seed=9)
    read = [q.clip for q in source]
    assert [int(c[0, 0, 0, 0]) for c in read] == [0, 2]
    # Same bytes, so the same content hashes: the attacker's cache answers them unpaid.
    expected = [c for r, c in TransferSet(root).iter_clips() if r.paid][:2]
    assert [clip_hash(c) for c in read] == [clip_hash(c) for c in expected]
    with pytest.raises(ValueError, match="3 paid clips, not 4"):
        write_prefix(root, 4, tmp_path / "q.npz")


def test_only_active_and_datafree_streams_depend_on_the_budget(tmp_path: Path) -> None:
    recipes = scoreboard_attacks(tmp_path)
    unstable = {name for name, recipe in recipes.items() if not prefix_stable(recipe)}
    assert unstable == {"active_balanced", "datafree"}
    trimmed = recipe_without_stream(recipes["datafree"])
    assert "datafree" not in trimmed and trimmed["train"] == recipes["datafree"]["train"]


async def test_replayed_noise_alarms_and_benign_sessions_do_not(
    victim_transport: httpx.ASGITransport,
) -> None:
    services = victim_transport.app.state.services  # type: ignore[attr-defined]
    detectors = available_detectors(services)
    assert {"prada", "prada_stats", "ood"} <= set(detectors)
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, (20, 16, 32, 32, 3), dtype=np.uint8) for _ in range(5)]
    attack = await replay_requests(DetectorPanel(services, "noise", ("ood",)), noise)
    assert attack.queries == 100
    alarm = attack.alarms["ood"]
    assert alarm is not None and alarm <= 40  # noise is out of distribution from the start
    benign = DetectorPanel(services, "benign", ("ood",))
    stream = realistic_benign(31337)
    sessions = [np.stack([next(stream).clip for _ in range(10)]) for _ in range(10)]
    await replay_requests(benign, sessions)
    assert benign.queries == 100 and benign.alarms["ood"] is None
    # Each detector keeps its own state under its own key: a new stream starts clean.
    fresh = await replay_requests(DetectorPanel(services, "noise-2", ("ood",)), noise[:1])
    assert fresh.queries == 20


def _results() -> dict[str, Any]:
    def run(agreement: float, budget: int = 100, paid: int = 100) -> dict[str, Any]:
        return {"top1_agreement": agreement, "budget": budget, "paid": paid, "clips": budget}

    return {
        "git_commit": "abc",
        "measured_at": "2026-12-02T00:00:00",
        "victim": "v",
        "config": {"budget": 100, "seed": 0},
        "eval": {"clips": 50, "seed": 424242},
        "defenses": {"none": {}, "am_2pct": {}},
        "detectors": ["ood", "prada"],
        "attacks": {
            "noise": {
                "defenses": {"none": run(0.5), "am_2pct": run(0.2)},
                "detectors": {
                    "ood": {
                        "first_alarm": 16,
                        "agreement_at_alarm": 0.1,
                        "alarm_run": run(0.1, 16, 0),
                    },
                    "prada": {"first_alarm": None, "agreement_at_alarm": 0.5, "alarm_run": None},
                },
            }
        },
        "benign": {"sessions": {"queries": 300}, "videos": {"queries": 20}},
        "benign_columns": {
            "defenses": {
                "none": {"accuracy_cost_points": 0.0},
                "am_2pct": {"accuracy_cost_points": 1.5},
            },
            "detectors": {
                "ood": {"false_alarm_sessions": False, "false_alarm_videos": False},
                "prada": {"false_alarm_sessions": True, "false_alarm_videos": False},
            },
        },
    }


def test_tables_and_heat_maps_carry_every_cell(tmp_path: Path) -> None:
    results = _results()
    agreement = agreement_matrix(results)
    assert agreement.rows == ["noise"] and agreement.values == [[0.5, 0.2]]
    assert "cost 1.5 pts" in agreement.columns[1]
    alarms = alarm_matrix(results)
    assert alarms.values == [[16, None]]
    assert alarms.texts == [["16\n(0.100)", "none\n(0.500)"]]
    assert "FA 1/0" in alarms.columns[1]
    table = markdown(results)
    assert (
        "| noise | 0.500 | 0.200 |" in table
        and "| *benign top-1 cost (points)* | 0.00 | 1.50 |" in table
    )
    assert "| noise | 16 (0.100) | none (0.500) |" in table
    assert "| noise / to the ood alarm (cached, own stream) | 16 | 0 | 16 |" in table
    paths = write_outputs(results, tmp_path)
    assert json.loads(paths["json"].read_text()) == results
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_failed_run_shows_as_an_error_cell(tmp_path: Path) -> None:
    results = _results()
    results["attacks"]["noise"]["defenses"]["am_2pct"]["top1_agreement"] = None
    agreement = agreement_matrix(results)
    assert agreement.values == [[0.5, None]] and agreement.texts == [["0.500", "error"]]
    assert "| noise | 0.500 | error |" in markdown(results)
    write_outputs(results, tmp_path)  # the heat map leaves the cell blank


def test_spec_refuses_what_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="unknown attacks"):
        ScoreboardSpec(out=tmp_path, attacks=("nope",))
    with pytest.raises(SpecError, match="must include none"):
        ScoreboardSpec(out=tmp_path, defenses=("am_2pct",))
    with pytest.raises(SpecError, match="budget"):
        ScoreboardSpec(out=tmp_path, budget=0)


@pytest.mark.slow
def test_small_scoreboard_end_to_end(tmp_path: Path) -> None:
    spec = ScoreboardSpec.small_version(tmp_path / "board", jobs=2)
    results = run_scoreboard(spec)
    paths = write_outputs(results, spec.out)
    saved = json.loads(paths["json"].read_text())
    assert saved == json.loads(json.dumps(results))
    assert saved["git_commit"] and saved["config"]["budget"] == spec.budget
    assert "| noise |" in paths["md"].read_text()
    assert paths["png"].stat().st_size > 1000
    detectors = saved["detectors"]
    assert {"prada", "prada_stats", "ood"} <= set(detectors)
    assert list(saved["attacks"]) == list(spec.attacks)
    for attack, row in saved["attacks"].items():
        assert list(row["defenses"]) == list(spec.defenses)
        for run in row["defenses"].values():
            # Every run paid exactly its budget, each on its own key.
            assert run["paid"] == run["clips"] == spec.budget, (attack, run)
            assert 0.0 <= run["top1_agreement"] <= 1.0
        for detector in detectors:
            cell = row["detectors"][detector]
            if cell["first_alarm"] is None:
                assert cell["alarm_run"] is None
                assert cell["agreement_at_alarm"] == row["defenses"]["none"]["top1_agreement"]
            else:
                assert 1 <= cell["first_alarm"] <= spec.budget
                rerun = cell["alarm_run"]
                # Rerun to the alarm from the attacker's cache: nothing paid.
                assert rerun["paid"] == 0 and rerun["clips"] == cell["first_alarm"]
                assert cell["agreement_at_alarm"] == rerun["top1_agreement"]
                assert cell["alarm_stream"] == "own"
    # The OOD monitor (the server default) catches uniform noise.
    assert saved["attacks"]["noise"]["detectors"]["ood"]["first_alarm"] is not None
    columns = saved["benign_columns"]
    assert set(columns["defenses"]) == set(spec.defenses)
    assert columns["defenses"]["none"]["accuracy_cost_points"] == 0.0
    assert set(columns["detectors"]) == set(detectors)
    assert saved["benign"]["sessions"]["queries"] == spec.benign
    assert saved["benign"]["videos"]["queries"] == spec.benign_videos
    assert not any(c["false_alarm_sessions"] for c in columns["detectors"].values())


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(
    "example",
    sorted(p.name for p in EXAMPLES.glob("*.yaml") if p.name != "datafree_generator.yaml"),
)
def test_every_example_trains_the_student_the_benchmarks_measure(example: str) -> None:
    # The benches and the scoreboard report what the examples' student reaches; a user copying
    # an example must get that student. (The data-free example trains its own, smaller one.)
    config = yaml.safe_load((EXAMPLES / example).read_text(encoding="utf-8"))
    assert config["student"] == STUDENT
