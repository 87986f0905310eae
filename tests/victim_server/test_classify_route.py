"""POST /v1/classify is served below FastAPI's dependency layer (victim_server/api/direct.py):
what that layer did for it (bearer parsing, header validation, documentation, route metrics)
still happens, with the same answers."""

from __future__ import annotations

from typing import Any

import httpx
from helpers.victim import budget_of, clips, create_key, npy_request

PROBLEM = "application/problem+json"


async def test_an_over_long_idempotency_key_is_a_422_problem_and_not_charged(
    victim_app: httpx.AsyncClient,
) -> None:
    key = await create_key(victim_app, budget=5)
    response = await victim_app.post(
        "/v1/classify", **npy_request(clips(1), key["api_key"], **{"Idempotency-Key": "k" * 201})
    )
    assert response.status_code == 422 and response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["type"] == "urn:vidsteal:problem:validation-error"
    assert problem["detail"] == "header.Idempotency-Key: String should have at most 200 characters"
    assert problem["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    assert problem["instance"] == "/v1/classify"
    longest = await victim_app.post(
        "/v1/classify", **npy_request(clips(1), key["api_key"], **{"Idempotency-Key": "k" * 200})
    )
    assert longest.status_code == 200, longest.text
    assert (await budget_of(victim_app, key["api_key"]))["spent"] == 1


async def test_credentials_other_than_a_bearer_key_are_a_401_challenge(
    victim_app: httpx.AsyncClient,
) -> None:
    key = await create_key(victim_app, budget=5)
    request = npy_request(clips(1), key["api_key"])
    for authorization in (f"Basic {key['api_key']}", "Bearer", "Bearer   ", ""):
        headers: dict[str, Any] = {**request["headers"], "Authorization": authorization}
        response = await victim_app.post(
            "/v1/classify", content=request["content"], headers=headers
        )
        assert response.status_code == 401, authorization
        assert response.headers["content-type"] == PROBLEM
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["type"] == "urn:vidsteal:problem:unauthorized"
    lower = {**request["headers"], "Authorization": f"bearer {key['api_key']}"}
    ok = await victim_app.post("/v1/classify", content=request["content"], headers=lower)
    assert ok.status_code == 200, ok.text
    assert (await budget_of(victim_app, key["api_key"]))["spent"] == 1


async def test_the_route_is_documented_with_its_header_security_and_answer(
    victim_app: httpx.AsyncClient,
) -> None:
    spec = (await victim_app.get("/openapi.json")).json()
    operation = spec["paths"]["/v1/classify"]["post"]
    assert operation["security"] == [{"HTTPBearer": []}]
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    (header,) = operation["parameters"]
    assert header["in"] == "header" and header["name"] == "Idempotency-Key"
    assert {"maxLength": 200, "type": "string"} in header["schema"]["anyOf"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ClassifyResponse"
    }
    assert "application/x-npy" in operation["requestBody"]["content"]
    assert operation["operationId"] == "classify_v1_classify_post"


async def test_requests_are_counted_under_the_route_template(
    victim_app: httpx.AsyncClient,
) -> None:
    key = await create_key(victim_app, budget=5)
    await victim_app.post("/v1/classify", **npy_request(clips(1), key["api_key"]))
    await victim_app.post("/v1/classify", content=b"", headers={"Content-Type": "text/plain"})
    metrics = (await victim_app.get("/metrics", headers={})).text
    lines = [line for line in metrics.splitlines() if line.startswith("vidsteal_requests_total{")]
    assert any('route="/v1/classify",status="200"' in line for line in lines), lines
    assert any('route="/v1/classify",status="401"' in line for line in lines), lines
