"""The SEAT detector over HTTP with real Redis: selected per key, blocks a key that keeps
sending near-copies of its own queries, reports its state on the detection status route."""

from __future__ import annotations

import httpx
import numpy as np
from helpers.victim import ADMIN_HEADERS, budget_of, create_key, npy_request

from shared.synthactions import SynthActions

SEAT = {"detector": "seat", "action": "block"}


def _near_copies(start: int) -> np.ndarray:
    """Two fresh clips, each followed by four brightness-shifted, noisy copies (an attacker
    augmenting its seeds)."""
    fresh, _ = SynthActions(seed=4711).batch(start, 2)
    rng = np.random.default_rng(start)
    batch = []
    for clip in fresh:
        batch.append(clip)
        for _ in range(4):
            noise = rng.integers(-6, 7, size=clip.shape) + int(rng.integers(-10, 11))
            batch.append(np.clip(clip.astype(np.int16) + noise, 0, 255).astype(np.uint8))
    return np.stack(batch)


async def test_seat_blocks_a_near_duplicate_stream(victim_app: httpx.AsyncClient) -> None:
    key = await create_key(victim_app, budget=1000, detection=SEAT)
    assert key["detection"]["detector"] == "seat"
    sent = 0
    while sent < 300:
        response = await victim_app.post(
            "/v1/classify", **npy_request(_near_copies(sent), key["api_key"])
        )
        if response.status_code == 403:
            break
        assert response.status_code == 200, response.text
        sent += 10
    else:
        raise AssertionError("seat never blocked the near-duplicate stream")
    assert response.json()["type"] == "urn:vidsteal:problem:detection-blocked"
    assert (await budget_of(victim_app, key["api_key"]))["spent"] == sent
    status = (
        await victim_app.get(f"/admin/keys/{key['key_id']}/detection", headers=ADMIN_HEADERS)
    ).json()
    assert status["detector"] == "seat" and status["alarm"] is True
    assert status["queries"] == sent and status["alarm_query"] <= sent
    assert status["w"] is None and status["score"] > 0
    switched = await victim_app.put(
        f"/admin/keys/{key['key_id']}/detection",
        json={"detector": "ood", "action": "block"},
        headers=ADMIN_HEADERS,
    )
    assert switched.status_code == 200 and switched.json()["alarm"] is False
    back = await victim_app.put(
        f"/admin/keys/{key['key_id']}/detection", json=SEAT, headers=ADMIN_HEADERS
    )
    assert back.json()["alarm"] is True  # each detector keeps its own state
