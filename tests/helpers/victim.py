"""Helpers for talking to a victim in tests: admin calls and clip bodies."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np

from helpers.services import ADMIN_TOKEN
from shared.codec import NPY_CONTENT_TYPE, encode_npy
from shared.synthactions import SynthActions

ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def clips(n: int, *, seed: int = 7, start: int = 0) -> np.ndarray:
    return SynthActions(seed=seed).batch(start, n)[0]


def npy_request(batch: np.ndarray, api_key: str, **headers: str) -> dict[str, Any]:
    return {
        "content": encode_npy(batch),
        "headers": {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": NPY_CONTENT_TYPE,
            **headers,
        },
    }


async def create_key(client: httpx.AsyncClient, **plan: Any) -> dict[str, Any]:
    body = {"budget": 100, "output": "probs", "top_k": 5, "name": "test", **plan}
    response = await client.post("/admin/keys", json=body, headers=ADMIN_HEADERS)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def budget_of(client: httpx.AsyncClient, api_key: str) -> dict[str, Any]:
    response = await client.get("/v1/budget", headers={"Authorization": f"Bearer {api_key}"})
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data
