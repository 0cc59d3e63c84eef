"""Admin routes: create, list, revoke, rotate, and their 404/409/422 answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.domain.keys import digest, parse_api_key
from tests.api.conftest import Api

INVALIDATION_FIELDS = {"confirmed", "scope", "detail", "acknowledged", "expected"}


async def status_of_me(api: Api, key: str) -> int:
    return (await api.client.get("/v1/me", headers=api.auth(key))).status_code


async def test_create_returns_the_key_once_with_its_details(api: Api) -> None:
    before = datetime.now(UTC)
    response = await api.client.post(
        "/v1/keys",
        headers=api.auth(),
        json={"name": "matchmaker", "scopes": ["write", "read"], "expires_in": 3600},
    )

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"key", "prefix", "name", "scopes", "created_at", "expires_at"}
    assert parse_api_key(body["key"]).prefix == body["prefix"]
    assert body["name"] == "matchmaker"
    assert body["scopes"] == ["read", "write"]
    expires_at = datetime.fromisoformat(body["expires_at"])
    assert before + timedelta(seconds=3600) <= expires_at <= datetime.now(UTC) + timedelta(hours=1)
    assert await status_of_me(api, body["key"]) == 200


async def test_create_without_expiry_or_scopes(api: Api) -> None:
    response = await api.client.post("/v1/keys", headers=api.auth(), json={"name": "bare"})

    assert response.status_code == 201
    assert response.json()["expires_at"] is None
    assert response.json()["scopes"] == []


async def test_list_shows_every_key_without_secrets(api: Api) -> None:
    created = await api.create_key(["read"], name="leaderboard")
    await api.client.post(f"/v1/keys/{created.record.prefix}/revoke", headers=api.auth())

    response = await api.client.get("/v1/keys", headers=api.auth())

    assert response.status_code == 200
    keys = {entry["prefix"]: entry for entry in response.json()["keys"]}
    entry = keys[created.record.prefix]
    assert set(entry) == {
        "prefix", "name", "scopes", "created_at", "expires_at", "revoked_at", "active",
    }  # fmt: skip
    assert entry["name"] == "leaderboard"
    assert entry["active"] is False and entry["revoked_at"] is not None
    assert keys[parse_api_key(api.admin_key).prefix]["active"] is True
    for secret in (created.plaintext, digest(created.plaintext), api.admin_key):
        assert secret not in response.text


async def test_revoke_reports_the_cache_invalidation_and_refuses_the_key(api: Api) -> None:
    created = await api.create_key(["read"])
    assert await status_of_me(api, created.plaintext) == 200

    response = await api.client.post(f"/v1/keys/{created.record.prefix}/revoke", headers=api.auth())

    assert response.status_code == 200
    body = response.json()
    assert body["prefix"] == created.record.prefix
    assert body["active"] is False and body["revoked_at"] is not None
    assert set(body["cache_invalidation"]) == INVALIDATION_FIELDS
    assert body["cache_invalidation"]["confirmed"] is True
    assert body["cache_invalidation"]["scope"] == "process"
    assert await status_of_me(api, created.plaintext) == 401


async def test_revoking_twice_keeps_the_first_revocation(api: Api) -> None:
    created = await api.create_key(["read"])
    path = f"/v1/keys/{created.record.prefix}/revoke"

    first = await api.client.post(path, headers=api.auth())
    second = await api.client.post(path, headers=api.auth())

    assert first.status_code == second.status_code == 200
    assert first.json()["revoked_at"] == second.json()["revoked_at"]


@pytest.mark.parametrize("action", ["revoke", "rotate"])
@pytest.mark.parametrize("prefix", ["game_ZZZZZZZZ", "nope", "game_!!!!!!!!", "game_" + "a" * 50])
async def test_unknown_or_malformed_prefix_is_404(api: Api, action: str, prefix: str) -> None:
    response = await api.client.post(f"/v1/keys/{prefix}/{action}", headers=api.auth())

    assert response.status_code == 404
    assert response.json() == {"detail": "no key has this prefix"}


async def test_rotate_with_grace_keeps_the_old_key_working_until_the_grace_ends(api: Api) -> None:
    old = await api.create_key(["read", "write"], name="game-server")
    assert await status_of_me(api, old.plaintext) == 200

    response = await api.client.post(
        f"/v1/keys/{old.record.prefix}/rotate", headers=api.auth(), json={"grace_seconds": 600}
    )

    assert response.status_code == 201
    body = response.json()
    assert body["prefix"] != old.record.prefix
    assert parse_api_key(body["key"]).prefix == body["prefix"]
    assert body["name"] == "game-server" and body["scopes"] == ["read", "write"]
    assert body["old_key"]["prefix"] == old.record.prefix
    old_expiry = datetime.fromisoformat(body["old_key"]["expires_at"])
    assert timedelta(0) < old_expiry - datetime.now(UTC) <= timedelta(seconds=600)
    assert set(body["cache_invalidation"]) == INVALIDATION_FIELDS
    assert await status_of_me(api, old.plaintext) == 200
    assert await status_of_me(api, body["key"]) == 200


async def test_rotate_without_grace_refuses_the_old_key_at_once(api: Api) -> None:
    old = await api.create_key(["read"])
    assert await status_of_me(api, old.plaintext) == 200

    response = await api.client.post(f"/v1/keys/{old.record.prefix}/rotate", headers=api.auth())

    assert response.status_code == 201
    assert response.json()["cache_invalidation"]["confirmed"] is True
    assert await status_of_me(api, old.plaintext) == 401
    assert await status_of_me(api, response.json()["key"]) == 200


async def test_rotating_a_revoked_key_is_409(api: Api) -> None:
    created = await api.create_key(["read"])
    await api.client.post(f"/v1/keys/{created.record.prefix}/revoke", headers=api.auth())

    response = await api.client.post(f"/v1/keys/{created.record.prefix}/rotate", headers=api.auth())

    assert response.status_code == 409
    assert response.json() == {"detail": "the key is revoked or expired"}


async def test_rotating_an_expired_key_is_409(api: Api) -> None:
    expired = await api.store_key(expires_at=datetime.now(UTC) - timedelta(minutes=1))

    response = await api.client.post(
        f"/v1/keys/{parse_api_key(expired).prefix}/rotate", headers=api.auth()
    )

    assert response.status_code == 409


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        ({"scopes": ["read"]}, "name"),
        ({"name": "x", "scopes": ["superuser"]}, "scopes"),
        ({"name": "x", "expires_in": 0}, "expires_in"),
        ({"name": "x", "expires_in": 10**12}, "expires_in"),
        ({"name": "x", "scopes": "read"}, "scopes"),
        ({"name": "", "scopes": []}, "name"),
        ({"name": "bad\nname"}, "name"),  # refused by the service, not by the body model
        ({"name": "x", "colour": "red"}, "colour"),
    ],
)
async def test_bad_create_bodies_are_422_naming_the_field_in_one_shape(
    api: Api, body: dict[str, Any], mentions: str
) -> None:
    response = await api.client.post("/v1/keys", headers=api.auth(), json=body)

    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail, detail
    assert all(set(error) == {"loc", "msg", "type"} for error in detail)
    assert any(error["loc"][0] == "body" and mentions in error["loc"] for error in detail), detail


async def test_an_unknown_scope_keeps_the_service_s_message(api: Api) -> None:
    response = await api.client.post(
        "/v1/keys", headers=api.auth(), json={"name": "x", "scopes": ["read", "superuser"]}
    )

    assert response.status_code == 422
    assert response.json()["detail"] == [
        {
            "loc": ["body", "scopes", 1],
            "msg": "unknown scope 'superuser': expected one of admin, read, write",
            "type": "unknown_scope",
        }
    ]


async def test_a_name_refused_by_the_service_is_422_at_body_name(api: Api) -> None:
    response = await api.client.post("/v1/keys", headers=api.auth(), json={"name": "bad\nname"})

    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["body", "name"]
    assert problem["msg"].startswith("name must be")


async def test_a_body_that_is_not_json_is_422(api: Api) -> None:
    response = await api.client.post(
        "/v1/keys",
        headers={**api.auth(), "Content-Type": "application/json"},
        content=b"{not json",
    )

    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert problem["loc"][0] == "body" and problem["type"] == "json_invalid"


@pytest.mark.parametrize("body", [{"grace_seconds": -1}, {"grace_seconds": 10**9}, {"x": 1}])
async def test_bad_rotate_bodies_are_422(api: Api, body: dict[str, Any]) -> None:
    created = await api.create_key(["read"])

    response = await api.client.post(
        f"/v1/keys/{created.record.prefix}/rotate", headers=api.auth(), json=body
    )

    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert problem["loc"][:2] == ["body", next(iter(body))]
    assert await status_of_me(api, created.plaintext) == 200
