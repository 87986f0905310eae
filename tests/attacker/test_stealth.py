"""Stealth mode: the same PRADA statistic computed locally keeps a noise attack unblocked."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from helpers.victim import ADMIN_HEADERS, create_key

from attacker.config import validate_config
from attacker.run import run_attack
from attacker.sources import ClipShape, build_source
from attacker.stages.collect import stealth_shaper
from attacker.stealth import StealthShaper
from shared.detection import NaturalnessEmbedding

SHAPE = ClipShape(16, 32, 32)
NATURAL = {"kind": "synthactions", "seed": 777, "labelled": True}


def _shaper(attack: dict[str, Any]) -> StealthShaper:
    calibration = np.stack(
        [q.clip for q in itertools.islice(iter(build_source(NATURAL, shape=SHAPE, seed=1)), 200)]
    )
    return StealthShaper(
        iter(build_source(attack, shape=SHAPE, seed=0)),
        iter(build_source({**NATURAL, "offset": 9000}, shape=SHAPE, seed=0)),
        NaturalnessEmbedding.fit(calibration),
        target_w=0.95,
        start_fraction=0.0,
    )


def test_near_duplicate_attack_clips_are_skipped() -> None:
    shaper = _shaper({"kind": "noise"})
    stream = list(itertools.islice(iter(shaper), 40))
    parts = [q.recipe["part"] for q in stream]
    # Noise clips all embed to one point: after the first, every attack slot is a duplicate.
    assert parts.count("attack") == 1 and shaper.stats.skipped >= 16


def test_falling_w_raises_the_natural_share() -> None:
    shaper = _shaper({"kind": "stacked_affine"})
    shaper.stats.natural_fraction = 0.2
    shaper._steer(0.5)  # W far below the target
    assert shaper.stats.natural_fraction > 0.2
    shaper._steer(0.99)
    assert shaper.stats.natural_fraction < 0.31


async def _attack(
    transport: httpx.ASGITransport,
    client: httpx.AsyncClient,
    redis_url: str,
    out: Path,
    stealth: bool,
) -> tuple[dict[str, Any], dict[str, Any]]:
    key = await create_key(
        client, budget=600, detection={"detector": "prada_stats", "action": "block"}
    )
    evaluation = await create_key(client, budget=40, output="label")
    config = validate_config(
        {
            "victim": {
                "url": "http://victim",
                "api_key": key["api_key"],
                "eval_api_key": evaluation["api_key"],
            },
            "budget": 600,
            "redis_url": redis_url,
            "out": str(out),
            "query": {"source": {"kind": "noise"}, "batch_clips": 20, "concurrency": 1},
            "student": {"architecture": "tiny3d", "kwargs": {"widths": [8, 8, 16, 16]}},
            "train": {"epochs": 1},
            "eval": {"source": NATURAL, "clips": 40},
            "stealth": {"enabled": stealth, "natural": NATURAL, "calibration_clips": 200},
        }
    )
    report = await run_attack(config, transport=transport, show_progress=False)
    status = (
        await client.get(f"/admin/keys/{key['key_id']}/detection", headers=ADMIN_HEADERS)
    ).json()
    return report, status


async def test_stealth_stays_unblocked_where_plain_noise_is_blocked(
    victim_transport: httpx.ASGITransport,
    victim_app: httpx.AsyncClient,
    redis_url: str,
    tmp_path: Path,
) -> None:
    plain, plain_status = await _attack(
        victim_transport, victim_app, redis_url, tmp_path / "plain", stealth=False
    )
    assert plain["collect"]["stopped_by"] == "blocked" and plain_status["alarm"] is True
    assert "blocked by the victim after" in plain["detection"]
    hidden, hidden_status = await _attack(
        victim_transport, victim_app, redis_url, tmp_path / "stealth", stealth=True
    )
    # The first noise clip is the same in both runs, so the stealth run gets it from the cache.
    collected = hidden["collect"]
    assert collected["clips"] == collected["paid"] + collected["cache_hits"] == 600
    assert collected["stopped_by"] == "target" and hidden_status["alarm"] is False
    stealth = hidden["collect"]["extra"]["stealth"]
    assert stealth["natural"] > stealth["attack"] and stealth["queries_before_alarm"] is None
    assert "stealth:" in hidden["detection"]


def test_stealth_never_sends_the_clips_it_calibrated_on() -> None:
    """A synthactions source ignores the run seed: calibration must not be the mix's first clips."""
    config = validate_config(
        {
            "victim": {"url": "http://victim", "api_key": "k"},
            "budget": 10,
            "query": {"source": {"kind": "noise"}},
            "stealth": {"enabled": True, "natural": NATURAL, "calibration_clips": 60},
        }
    )
    shaper = stealth_shaper(config, SHAPE)
    assert shaper is not None
    shaper.stats.natural_fraction = 1.0  # every slot sends a natural clip
    sent = {q.clip.tobytes() for q in itertools.islice(iter(shaper), 300)}
    # What the calibration saw: the embedding fitted on the first 60 clips of the natural source.
    head = np.stack(
        [q.clip for q in itertools.islice(iter(build_source(NATURAL, shape=SHAPE, seed=7)), 60)]
    )
    calibrated = NaturalnessEmbedding.fit(head)
    assert shaper.embedding == calibrated
    assert not sent & {clip.tobytes() for clip in head}
