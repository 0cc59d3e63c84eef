"""``GET /v1/me`` and the 401/403 rules, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.domain.keys import generate_api_key
from tests.api.conftest import Api, ApiFactory


async def expect_401(api: Api, headers: dict[str, str]) -> None:
    response = await api.client.get("/v1/me", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"detail": "invalid or missing API key"}
    assert response.headers["WWW-Authenticate"] == "APIKey"


async def test_valid_key_gets_its_prefix_and_scopes(api: Api) -> None:
    created = await api.create_key(["write", "read"], expires_in=3600)

    response = await api.client.get("/v1/me", headers=api.auth(created.plaintext))

    assert response.status_code == 200
    body = response.json()
    assert body["prefix"] == created.record.prefix
    assert body["scopes"] == ["read", "write"]
    assert datetime.fromisoformat(body["expires_at"]) == created.record.expires_at
    assert created.plaintext not in response.text


async def test_missing_or_empty_header_is_401(api: Api) -> None:
    await expect_401(api, {})
    await expect_401(api, {"X-API-Key": ""})


@pytest.mark.parametrize(
    "bad_key",
    [
        "not-a-key",
        "game_" + "A" * 200,
        "x" * 10_000,  # longer header blocks than HTTP_MAX_HEADER_BYTES get 431 (tests/edge)
        "Bearer something",
    ],
)
async def test_malformed_key_is_401_without_touching_cache_or_database(
    api: Api, bad_key: str
) -> None:
    before = api.service.metrics.snapshot()

    await expect_401(api, {"X-API-Key": bad_key})

    assert api.service.metrics.snapshot() == before


async def test_key_with_a_wrong_checksum_is_401_without_database_work(api: Api) -> None:
    plaintext = generate_api_key().plaintext
    last = plaintext[-1]
    forged = plaintext[:-1] + ("A" if last != "A" else "B")
    before = api.service.metrics.repository_lookups

    await expect_401(api, {"X-API-Key": forged})

    assert api.service.metrics.repository_lookups == before


async def test_unknown_key_is_401(api: Api) -> None:
    await expect_401(api, api.auth(generate_api_key().plaintext))


async def test_revoked_key_is_401(api: Api) -> None:
    created = await api.create_key(["read"])
    assert (await api.client.get("/v1/me", headers=api.auth(created.plaintext))).status_code == 200

    revoke = await api.client.post(f"/v1/keys/{created.record.prefix}/revoke", headers=api.auth())
    assert revoke.status_code == 200

    await expect_401(api, api.auth(created.plaintext))


async def test_expired_key_is_401(api: Api) -> None:
    expired = await api.store_key(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    await expect_401(api, api.auth(expired))


async def test_key_without_the_admin_scope_is_403_on_admin_routes(api: Api) -> None:
    reader = await api.create_key(["read", "write"])
    target = await api.create_key(["read"])
    headers = api.auth(reader.plaintext)
    prefix = target.record.prefix

    responses = [
        await api.client.post("/v1/keys", headers=headers, json={"name": "x", "scopes": []}),
        await api.client.get("/v1/keys", headers=headers),
        await api.client.post(f"/v1/keys/{prefix}/revoke", headers=headers),
        await api.client.post(f"/v1/keys/{prefix}/rotate", headers=headers),
    ]

    for response in responses:
        assert response.status_code == 403, response.text
        assert response.json() == {"detail": "this key lacks the 'admin' scope"}
    assert (await api.client.get("/v1/me", headers=headers)).status_code == 200


async def test_admin_routes_without_a_key_are_401_not_403(api: Api) -> None:
    response = await api.client.get("/v1/keys")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "APIKey"


async def test_the_header_name_is_configurable(make_api: ApiFactory, database_url: str) -> None:
    api = await make_api(DATABASE_URL=database_url, APIKEY_HEADER_NAME="X-Game-Key")

    by_configured = await api.client.get("/v1/me", headers={"X-Game-Key": api.admin_key})
    by_default = await api.client.get("/v1/me", headers={"X-API-Key": api.admin_key})

    assert by_configured.status_code == 200
    assert by_default.status_code == 401
    schema = (await api.client.get("/openapi.json")).json()
    assert schema["components"]["securitySchemes"]["ApiKeyAuth"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-Game-Key",
        "description": "An API key issued by `POST /v1/keys` or `game-api keys create`.",
    }


@pytest.mark.parametrize("padding", [" ", "\t", "  \t ", "\t \t"])
async def test_optional_whitespace_around_the_key_is_not_part_of_it(api: Api, padding: str) -> None:
    """RFC 9110 §5.5: leading and trailing spaces and tabs are not part of a field value."""
    created = await api.create_key(["read"])

    for value in (created.plaintext + padding, padding + created.plaintext + padding):
        response = await api.client.get("/v1/me", headers={"X-API-Key": value})
        assert response.status_code == 200, repr(value)
        assert response.json()["prefix"] == created.record.prefix
