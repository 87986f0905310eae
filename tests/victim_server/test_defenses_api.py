"""MAD and Adaptive Misinformation through the real app: chosen per key through the admin API,
validated there (422 problem+json), applied to the model's answer of /v1/classify."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest
from helpers.victim import ADMIN_HEADERS, clips, create_key, npy_request


async def _probs(client: httpx.AsyncClient, key: dict[str, Any], batch: np.ndarray) -> np.ndarray:
    response = await client.post("/v1/classify", **npy_request(batch, key["api_key"]))
    assert response.status_code == 200, response.text
    return np.array([r["probs"] for r in response.json()["results"]])


async def test_each_key_gets_its_own_defense(victim_app: httpx.AsyncClient) -> None:
    batch = clips(12, seed=5)
    plain = await create_key(victim_app)
    mad = await create_key(
        victim_app, defenses={"prediction_poisoning": {"epsilon": 0.5, "norm": "l1"}}
    )
    am_all = await create_key(victim_app, defenses={"adaptive_misinformation": {"tau": 0.999999}})
    base = await _probs(victim_app, plain, batch)
    poisoned = await _probs(victim_app, mad, batch)
    misinformed = await _probs(victim_app, am_all, batch)
    l1 = np.abs(poisoned - base).sum(axis=1)
    assert (l1 <= 0.5 + 1e-4).all() and l1.mean() > 0.25
    assert (poisoned.argmax(1) == base.argmax(1)).all()
    # tau near 1: every clip counts as unsure and is answered by the misinformation function
    assert (misinformed.argmax(1) != base.argmax(1)).all()
    # switching a key's defense off again gives the model's own answer
    off = await victim_app.put(
        f"/admin/keys/{mad['key_id']}/defenses", json={}, headers=ADMIN_HEADERS
    )
    assert off.status_code == 200, off.text
    np.testing.assert_allclose(await _probs(victim_app, mad, batch), base, atol=2e-6)


@pytest.mark.parametrize(
    "defenses",
    [
        {"prediction_poisoning": {"epsilon": 0}},
        {"prediction_poisoning": {"epsilon": 2.5}},
        {"prediction_poisoning": {"epsilon": 1.5, "norm": "l2"}},
        {"prediction_poisoning": {"norm": "linf"}},
        {"prediction_poisoning": {"surrogate_seed": -1}},
        {"adaptive_misinformation": {}},
        {"adaptive_misinformation": {"tau": 1.2}},
        {"adaptive_misinformation": {"tau": 0.5, "nu": -3}},
        {"mad": {"epsilon": 0.5}},
    ],
)
async def test_bad_parameters_are_422_problems(
    victim_app: httpx.AsyncClient, defenses: dict[str, Any]
) -> None:
    created = await victim_app.post(
        "/admin/keys", json={"budget": 10, "defenses": defenses}, headers=ADMIN_HEADERS
    )
    assert created.status_code == 422
    assert created.headers["content-type"].startswith("application/problem+json")
    key = await create_key(victim_app)
    changed = await victim_app.put(
        f"/admin/keys/{key['key_id']}/defenses", json=defenses, headers=ADMIN_HEADERS
    )
    assert changed.status_code == 422
    assert changed.headers["content-type"].startswith("application/problem+json")
