"""``GET /v1/keys`` a page at a time: the cursor walk, its limits, and the filters."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.domain.keys import parse_api_key
from tests.api.conftest import Api

T0 = datetime(2030, 1, 1, tzinfo=UTC)


async def listing(api: Api, **params: Any) -> Any:
    response = await api.client.get("/v1/keys", headers=api.auth(), params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def walk(api: Api, **params: Any) -> list[str]:
    """Every prefix, following ``next_cursor`` to the end."""
    prefixes: list[str] = []
    cursor = None
    for _ in range(1000):
        body = await listing(api, **params, **({"cursor": cursor} if cursor else {}))
        prefixes += [key["prefix"] for key in body["keys"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return prefixes
    raise AssertionError("the cursor walk did not end")


async def test_a_cursor_walk_returns_every_key_once_in_creation_order(api: Api) -> None:
    admin = parse_api_key(api.admin_key).prefix
    stored = [
        parse_api_key(await api.store_key(name=f"k{i}", created_at=T0 + timedelta(seconds=i)))
        for i in range(7)
    ]

    assert await walk(api, limit=2) == [admin] + [key.prefix for key in stored]
    assert await walk(api, limit=1000) == [admin] + [key.prefix for key in stored]


async def test_keys_created_at_the_same_instant_are_each_listed_once(api: Api) -> None:
    same = {parse_api_key(await api.store_key(created_at=T0)).prefix for _ in range(5)}

    walked = await walk(api, limit=1)

    # The prefix breaks the tie (in the database's collation), so no key is skipped or repeated
    # where a page boundary falls between keys created at the same instant.
    assert len(walked) == 6
    assert set(walked[1:]) == same
    assert walked == await walk(api, limit=1000)


async def test_the_last_page_has_no_next_cursor(api: Api) -> None:
    await api.store_key(created_at=T0)

    first = await listing(api, limit=1)
    last = await listing(api, limit=1, cursor=first["next_cursor"])

    assert first["next_cursor"] is not None
    assert len(last["keys"]) == 1
    assert last["next_cursor"] is None


async def test_the_default_page_is_100_keys(api: Api) -> None:
    for i in range(100):
        await api.store_key(created_at=T0 + timedelta(microseconds=i))

    body = await listing(api)

    assert len(body["keys"]) == 100
    assert body["next_cursor"] is not None


@pytest.mark.parametrize("limit", [0, -1, 1001, "many"])
async def test_a_limit_out_of_range_is_422(api: Api, limit: object) -> None:
    response = await api.client.get("/v1/keys", headers=api.auth(), params={"limit": limit})

    assert response.status_code == 422
    assert "limit" in response.text


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor",
        "%%%",
        base64.urlsafe_b64encode(b"[1, 2]").decode(),
        base64.urlsafe_b64encode(b'["yesterday", "game_Ab3dE9xZ"]').decode(),
        base64.urlsafe_b64encode(b'["2030-01-01T00:00:00", "game_Ab3dE9xZ"]').decode(),
        base64.urlsafe_b64encode(b"{}").decode(),
        "x" * 500,
    ],
)
async def test_a_malformed_cursor_is_422_with_a_clear_detail(api: Api, cursor: str) -> None:
    response = await api.client.get("/v1/keys", headers=api.auth(), params={"cursor": cursor})

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["query", "cursor"]
    assert error["msg"].startswith("cursor is malformed")


async def test_the_active_filter_leaves_out_revoked_and_expired_keys(api: Api) -> None:
    now = datetime.now(UTC)
    active = parse_api_key(await api.store_key(name="active", created_at=T0)).prefix
    later = await api.store_key(
        name="expires-later", created_at=T0, expires_at=now + timedelta(hours=1)
    )
    await api.store_key(name="expired", created_at=T0, expires_at=now - timedelta(seconds=1))
    await api.store_key(name="revoked", created_at=T0, revoked_at=now)

    walked = await walk(api, limit=1, active="true")
    everything = await walk(api, limit=1)

    admin = parse_api_key(api.admin_key).prefix
    assert sorted(walked) == sorted([admin, active, parse_api_key(later).prefix])
    assert len(everything) == 5


async def test_the_name_prefix_filter_is_literal_and_case_sensitive(api: Api) -> None:
    names = ["team_a-1", "team_a-2", "teamXa-3", "Team_a-4", "team_b", "other"]
    by_name = {
        name: parse_api_key(await api.store_key(name=name, created_at=T0 + timedelta(seconds=i)))
        for i, name in enumerate(names)
    }

    async def names_for(prefix: str) -> list[str]:
        found = set(await walk(api, limit=1, name_prefix=prefix))
        return [name for name, key in by_name.items() if key.prefix in found]

    # "_" and "%" are not wildcards, and SQLite's case-blind LIKE does not leak through.
    assert await names_for("team_a") == ["team_a-1", "team_a-2"]
    assert await names_for("team%") == []
    assert await names_for("team") == ["team_a-1", "team_a-2", "teamXa-3", "team_b"]
    assert await names_for("Team") == ["Team_a-4"]


async def test_filters_combine_with_the_cursor(api: Api) -> None:
    now = datetime.now(UTC)
    for i in range(6):
        await api.store_key(
            name=f"bot-{i}",
            created_at=T0 + timedelta(seconds=i),
            revoked_at=now if i % 2 else None,
        )

    walked = await walk(api, limit=1, active="true", name_prefix="bot-")

    assert len(walked) == 3


async def test_the_service_checks_the_page_size_for_the_command_line(api: Api) -> None:
    from app.domain.errors import InvalidListRequest

    with pytest.raises(InvalidListRequest):
        await api.service.list_keys(limit=1001)
    with pytest.raises(InvalidListRequest):
        await api.service.list_keys(limit=0)
