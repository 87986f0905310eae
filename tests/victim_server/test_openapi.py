"""The served OpenAPI document matches the service (issue 13.6): every status a route answers is
documented for it, errors as application/problem+json, and model-bound limits are in the schema."""

from __future__ import annotations

from typing import Any

import httpx
from helpers.victim import ADMIN_HEADERS, create_key

PROBLEM = "application/problem+json"


async def _spec(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    spec: dict[str, Any] = response.json()
    return spec


async def test_error_responses_are_documented_as_problems(victim_app: httpx.AsyncClient) -> None:
    spec = await _spec(victim_app)
    assert "Problem" in spec["components"]["schemas"]
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert list(response["content"]) == [PROBLEM], (path, method, status)
            if path.startswith(("/v1/", "/admin/")):
                assert "401" in operation["responses"], (path, method)
    classify = spec["paths"]["/v1/classify"]["post"]["responses"]
    for status in ("400", "401", "403", "409", "413", "415", "422", "429", "503"):
        assert status in classify


async def test_top_k_is_bounded_by_the_number_of_classes(victim_app: httpx.AsyncClient) -> None:
    schemas = (await _spec(victim_app))["components"]["schemas"]
    assert schemas["KeyCreate"]["properties"]["top_k"]["maximum"] == 16
    branches = schemas["DefensePolicy"]["properties"]["top_k"]["anyOf"]
    assert any(b.get("maximum") == 16 for b in branches)


async def test_wrong_method_is_a_method_not_allowed_problem(victim_app: httpx.AsyncClient) -> None:
    response = await victim_app.get("/v1/classify")
    assert response.status_code == 405
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["type"] == "urn:vidsteal:problem:method-not-allowed"
    assert "POST" in response.headers["allow"]


async def test_allow_lists_every_method_of_the_path(victim_app: httpx.AsyncClient) -> None:
    """FastAPI registers one route per method; a 405 names all of them (schemathesis ST205)."""
    spec = await _spec(victim_app)
    for path, concrete in (
        ("/admin/keys", "/admin/keys"),
        ("/admin/keys/{key_id}", "/admin/keys/k0"),
        ("/admin/keys/{key_id}/detection", "/admin/keys/k0/detection"),
    ):
        response = await victim_app.request("OPTIONS", concrete, headers=ADMIN_HEADERS)
        assert response.status_code == 405
        allowed = {m.strip() for m in response.headers["allow"].split(",")}
        assert {m.upper() for m in spec["paths"][path]} <= allowed, (path, allowed)
        assert allowed <= {"GET", "HEAD", "POST", "PUT", "DELETE"}


async def test_an_unparsable_admin_body_is_a_documented_malformed_request(
    victim_app: httpx.AsyncClient,
) -> None:
    key = await create_key(victim_app, budget=1)
    spec = await _spec(victim_app)
    for path, concrete in (
        ("/admin/keys", "/admin/keys"),
        ("/admin/keys/{key_id}/topup", f"/admin/keys/{key['key_id']}/topup"),
    ):
        response = await victim_app.post(
            concrete,
            content=b"k\xc3\x28$",  # not UTF-8: FastAPI cannot even decode it
            headers={**ADMIN_HEADERS, "Content-Type": "application/json"},
        )
        assert response.status_code == 400, response.text
        assert response.headers["content-type"].startswith(PROBLEM)
        assert response.json()["type"] == "urn:vidsteal:problem:malformed-request"
        assert "400" in spec["paths"][path]["post"]["responses"]


async def test_a_deleted_keys_sub_resources_are_gone(victim_app: httpx.AsyncClient) -> None:
    key = await create_key(victim_app, budget=5)
    base = f"/admin/keys/{key['key_id']}"
    deleted = await victim_app.delete(base, headers=ADMIN_HEADERS)
    assert deleted.status_code == 200 and deleted.json()["revoked"] is True
    for method, path, body in (
        ("GET", base, None),
        ("GET", f"{base}/detection", None),
        ("PUT", f"{base}/detection", {"detector": "none"}),
        ("PUT", f"{base}/defenses", {}),
        ("POST", f"{base}/topup", {"amount": 1}),
        ("DELETE", base, None),
    ):
        response = await victim_app.request(method, path, json=body, headers=ADMIN_HEADERS)
        assert response.status_code == 404, (method, path, response.text)
        assert response.headers["content-type"].startswith(PROBLEM)
    listed = await victim_app.get("/admin/keys", headers=ADMIN_HEADERS)
    assert [k["revoked"] for k in listed.json() if k["key_id"] == key["key_id"]] == [True]
    top = await victim_app.post(f"{base}/topup", json={"amount": 5}, headers=ADMIN_HEADERS)
    assert top.status_code == 404
    assert (await victim_app.get("/admin/keys", headers=ADMIN_HEADERS)).json()[0]["budget"] == 5


async def test_every_answer_to_bad_requests_is_documented(victim_app: httpx.AsyncClient) -> None:
    """A small fuzzer: bad credentials, bodies and parameters on every operation; each answer's
    status must be documented for that operation, with the documented content type."""
    spec = await _spec(victim_app)
    key = await create_key(victim_app, budget=3)
    user = {"Authorization": f"Bearer {key['api_key']}"}
    credentials = [{}, {"Authorization": "Bearer nope"}, user, ADMIN_HEADERS]
    bodies: list[dict[str, Any]] = [
        {},
        {"content": b"{", "headers": {"Content-Type": "application/json"}},
        {"json": {"budget": -1, "top_k": 10_000}},
        {"json": {"amount": 0}},
        {"content": b"\0" * 64, "headers": {"Content-Type": "text/plain"}},
        {"content": b"k\xc3\x28$", "headers": {"Content-Type": "application/json"}},
    ]
    failures = []
    for path, item in spec["paths"].items():
        concrete = path.replace("{key_id}", key["key_id"])
        for method, operation in item.items():
            documented = set(operation["responses"])
            for auth in credentials:
                for body in bodies:
                    headers = {**auth, **body.get("headers", {})}
                    extra = {k: v for k, v in body.items() if k != "headers"}
                    response = await victim_app.request(
                        method.upper(), concrete, headers=headers, **extra
                    )
                    status = str(response.status_code)
                    if response.status_code >= 500 or status not in documented:
                        failures.append(f"{method.upper()} {path} -> {status}")
                    elif response.status_code >= 400:
                        ctype = response.headers["content-type"]
                        if not ctype.startswith(PROBLEM):
                            failures.append(f"{method.upper()} {path} -> {status} {ctype}")
    assert not failures, sorted(set(failures))


async def test_request_bodies_take_json_types_only(victim_app: httpx.AsyncClient) -> None:
    """What the schema calls a boolean or an integer is not coerced from 0, "5" or 5.5
    (schemathesis ST201: a schema-violating request was accepted); 5.0 is a JSON Schema
    integer and is taken (ST202: a schema-valid request was rejected)."""
    for body in (
        {"budget": 1, "defenses": {"label_only": 0}},
        {"budget": "5"},
        {"budget": 5.5},
        {"budget": True},
        {"budget": 1, "top_k": "3"},
        {"budget": 1, "detection": {"delta": "0.5"}},
    ):
        response = await victim_app.post("/admin/keys", json=body, headers=ADMIN_HEADERS)
        assert response.status_code == 422, (body, response.text)
    ok = {
        "budget": 5.0,
        "top_k": 3.0,
        "defenses": {"gaussian_noise": {"sigma": 0}, "reverse_sigmoid": {"beta": 1}, "top_k": 2.0},
    }
    created = await victim_app.post("/admin/keys", json=ok, headers=ADMIN_HEADERS)
    assert created.status_code == 201, created.text
    assert created.json()["budget"] == 5 and created.json()["defenses"]["top_k"] == 2
