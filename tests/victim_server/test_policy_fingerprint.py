"""The answer-policy fingerprint of GET /v1/model: changes exactly when answers could."""

from __future__ import annotations

import pytest

from shared.schemas import DefensePolicy, DetectionPolicy, GaussianNoise, OutputMode
from victim_server.policy.fingerprint import fingerprint_secret, policy_fingerprint

SECRET = fingerprint_secret("test-admin-token-0123456789abcdef")


def _fp(**changes: object) -> str:
    policy: dict[str, object] = {
        "output": OutputMode.PROBS,
        "top_k": 5,
        "defenses": DefensePolicy(),
        "detection": DetectionPolicy(),
        "secret": SECRET,
    }
    policy.update(changes)
    return policy_fingerprint(**policy)  # type: ignore[arg-type]


def test_equal_policies_have_equal_fingerprints() -> None:
    assert _fp() == _fp()
    assert len(_fp()) == 32
    # Parts that cannot change a probs answer: top_k, a detector that only logs or blocks.
    assert _fp(top_k=3) == _fp()
    assert _fp(detection=DetectionPolicy(detector="prada", action="block")) == _fp()


@pytest.mark.parametrize(
    "change",
    [
        {"output": OutputMode.LOGITS},
        {"defenses": DefensePolicy(gaussian_noise=GaussianNoise(sigma=0.05))},
        {"defenses": DefensePolicy(round_decimals=2)},
        {"defenses": DefensePolicy(top_k=3)},
        {"defenses": DefensePolicy(label_only=True)},
        {"detection": DetectionPolicy(detector="prada", action="poison")},
        {"secret": fingerprint_secret("another-admin-token-0123456789")},
    ],
)
def test_anything_that_shapes_answers_changes_the_fingerprint(change: dict[str, object]) -> None:
    assert _fp(**change) != _fp()


def test_top_k_counts_in_topk_mode() -> None:
    assert _fp(output=OutputMode.TOPK, top_k=3) != _fp(output=OutputMode.TOPK, top_k=5)


async def test_model_info_publishes_key_id_and_fingerprint(victim_app: object) -> None:
    import httpx
    from helpers.victim import ADMIN_HEADERS, create_key

    assert isinstance(victim_app, httpx.AsyncClient)
    plain = await create_key(victim_app)
    noised = await create_key(victim_app, defenses={"gaussian_noise": {"sigma": 0.1}})
    infos = []
    for key in (plain, noised):
        response = await victim_app.get(
            "/v1/model", headers={"Authorization": f"Bearer {key['api_key']}"}
        )
        assert response.status_code == 200, response.text
        infos.append(response.json())
    assert [i["key_id"] for i in infos] == [plain["key_id"], noised["key_id"]]
    assert infos[0]["policy_fingerprint"] != infos[1]["policy_fingerprint"]
    await victim_app.put(
        f"/admin/keys/{plain['key_id']}/defenses",
        json={"gaussian_noise": {"sigma": 0.1}},
        headers=ADMIN_HEADERS,
    )
    again = await victim_app.get(
        "/v1/model", headers={"Authorization": f"Bearer {plain['api_key']}"}
    )
    assert again.json()["policy_fingerprint"] == infos[1]["policy_fingerprint"]
