"""A key can only create keys with scopes it holds and no longer life than its own."""

from __future__ import annotations

from typing import Any

import pytest

from app.domain.errors import KeyPolicyViolation
from tests.api.conftest import Api, ApiFactory

ALL_SCOPES = ["admin", "read", "write"]


async def post_key(api: Api, key: str, **body: Any) -> Any:
    return await api.client.post("/v1/keys", headers=api.auth(key), json={"name": "new", **body})


async def test_an_expiring_admin_key_cannot_create_a_key_without_expiry(api: Api) -> None:
    temporary = (await api.create_key(ALL_SCOPES, name="temp", expires_in=60)).plaintext

    response = await post_key(api, temporary, scopes=["read"])

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert "must expire too" in error["msg"] and error["loc"] == ["body", "expires_in"]


async def test_an_expiring_admin_key_cannot_create_a_key_that_outlives_it(api: Api) -> None:
    temporary = (await api.create_key(ALL_SCOPES, name="temp", expires_in=60)).plaintext

    response = await post_key(api, temporary, scopes=["read"], expires_in=3600)

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert "outlive" in error["msg"] and error["loc"] == ["body", "expires_in"]


async def test_an_expiring_admin_key_can_create_a_shorter_lived_key(api: Api) -> None:
    temporary = await api.create_key(ALL_SCOPES, name="temp", expires_in=60)

    response = await post_key(api, temporary.plaintext, scopes=["read"], expires_in=30)

    assert response.status_code == 201
    created = response.json()
    assert created["expires_at"] is not None
    assert temporary.record.expires_at is not None
    new_key = await api.service.authenticate(created["key"])
    assert new_key.expires_at is not None
    assert new_key.expires_at <= temporary.record.expires_at


async def test_an_admin_only_key_cannot_grant_a_scope_it_lacks(api: Api) -> None:
    admin_only = (await api.create_key(["admin"], name="narrow")).plaintext

    for scopes in (["write"], ["admin", "write"], ["read"]):
        response = await post_key(api, admin_only, scopes=scopes)
        assert response.status_code == 422, scopes
        [error] = response.json()["detail"]
    assert "lacks" in error["msg"] and error["loc"] == ["body", "scopes"]


async def test_a_key_can_grant_a_subset_of_its_scopes(api: Api) -> None:
    admin_read = (await api.create_key(["admin", "read"], name="ops")).plaintext

    for scopes in (["read"], ["admin"], [], ["admin", "read"]):
        response = await post_key(api, admin_read, scopes=scopes)
        assert response.status_code == 201, (scopes, response.text)
    assert (await post_key(api, admin_read, scopes=["write"])).status_code == 422


async def test_a_refused_request_creates_nothing(api: Api) -> None:
    admin_only = (await api.create_key(["admin"], name="narrow")).plaintext

    await post_key(api, admin_only, name="sneaky", scopes=["write"])

    page = await api.service.list_keys(name_prefix="sneaky")
    assert page.records == []


async def test_the_operator_command_line_is_not_bound_by_any_key(api: Api) -> None:
    # No issuer: the CLI can write to the database anyway, so it is trusted.
    created = await api.service.create("ops", ALL_SCOPES)

    assert created.record.expires_at is None


async def test_the_service_enforces_the_rule_for_any_issuer(api: Api) -> None:
    issuer = await api.service.authenticate(
        (await api.create_key(["admin", "read"], name="t", expires_in=60)).plaintext
    )

    with pytest.raises(KeyPolicyViolation):
        await api.service.create("x", ["read"], None, issuer=issuer)
    with pytest.raises(KeyPolicyViolation):
        await api.service.create("x", ["write"], 10, issuer=issuer)
    assert (await api.service.create("x", ["read"], 10, issuer=issuer)).record.scopes == ("read",)


async def test_a_key_cannot_rotate_a_key_wider_or_longer_lived_than_itself(
    make_api: ApiFactory, database_url: str
) -> None:
    """Rotation copies the old key's scopes and expiry to the successor: the same rule."""
    api = await make_api(DATABASE_URL=database_url)
    short_lived = await api.service.create("short", ["admin", "read", "write"], 60)
    permanent = await api.create_key(["admin", "read", "write"], name="permanent")
    narrow_admin = await api.service.create("narrow", ["admin"])
    wide = await api.create_key(["read", "write"], name="wide")

    by_short = await api.client.post(
        f"/v1/keys/{permanent.record.prefix}/rotate", headers=api.auth(short_lived.plaintext)
    )
    by_narrow = await api.client.post(
        f"/v1/keys/{wide.record.prefix}/rotate", headers=api.auth(narrow_admin.plaintext)
    )
    by_full_admin = await api.client.post(
        f"/v1/keys/{wide.record.prefix}/rotate", headers=api.auth()
    )

    assert by_short.status_code == 422 and by_narrow.status_code == 422
    assert by_full_admin.status_code == 201
