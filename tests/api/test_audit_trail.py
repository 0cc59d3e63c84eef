"""The audit trail over HTTP (SQLite and PostgreSQL): who created, revoked or rotated a key."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.domain.errors import RepositoryUnavailable
from app.domain.keys import digest, parse_api_key
from app.repositories.base import AuditActor
from tests.api.conftest import Api


async def audit_of(api: Api, **params: Any) -> list[dict[str, Any]]:
    response = await api.client.get("/v1/audit", headers=api.auth(), params=params)
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["entries"]
    return entries


def admin_prefix(api: Api) -> str:
    return parse_api_key(api.admin_key).prefix


async def test_create_revoke_and_rotate_are_recorded_with_actor_and_request_id(api: Api) -> None:
    headers = {**api.auth(), "X-Request-ID": "req-create-1"}
    created = await api.client.post("/v1/keys", headers=headers, json={"name": "audited"})
    assert created.status_code == 201
    target = created.json()["prefix"]
    rotated = await api.client.post(
        f"/v1/keys/{target}/rotate", headers={**api.auth(), "X-Request-ID": "req-rotate-2"}
    )
    assert rotated.status_code == 201
    successor = rotated.json()["prefix"]
    revoked = await api.client.post(
        f"/v1/keys/{successor}/revoke", headers={**api.auth(), "X-Request-ID": "req-revoke-3"}
    )
    assert revoked.status_code == 200

    on_target = await audit_of(api, target=target)
    assert [(e["action"], e["request_id"], e["detail"]) for e in on_target] == [
        ("rotated", "req-rotate-2", successor),
        ("created", "req-create-1", None),
    ]
    assert {e["actor_prefix"] for e in on_target} == {admin_prefix(api)}
    assert on_target[0]["finality"] is not None  # a rotation narrows the key: its finality too
    assert on_target[1]["finality"] is None

    (revocation,) = await audit_of(api, target=successor)
    assert revocation["action"] == "revoked"
    assert revocation["actor_prefix"] == admin_prefix(api)
    assert revocation["request_id"] == "req-revoke-3"
    assert revocation["finality"] == revoked.json()["finality"]["how"]
    assert set(revocation) == {
        "id", "occurred_at", "actor_prefix", "action", "target_prefix", "detail",
        "request_id", "finality",
    }  # fmt: skip


async def test_a_generated_request_id_is_the_one_echoed(api: Api) -> None:
    response = await api.client.post("/v1/keys", headers=api.auth(), json={"name": "no-id"})

    (entry,) = await audit_of(api, target=response.json()["prefix"])
    assert entry["request_id"] == response.headers["X-Request-ID"]


async def test_a_repeated_revoke_adds_no_row_and_keeps_the_first_actor(api: Api) -> None:
    target = (await api.create_key(["read"])).record.prefix
    for request_id in ("first", "second"):
        response = await api.client.post(
            f"/v1/keys/{target}/revoke", headers={**api.auth(), "X-Request-ID": request_id}
        )
        assert response.status_code == 200

    revocations = [e for e in await audit_of(api, target=target) if e["action"] == "revoked"]
    assert [e["request_id"] for e in revocations] == ["first"]


async def test_a_refused_rotation_leaves_no_audit_row(api: Api) -> None:
    target = (await api.create_key(["read"])).record.prefix
    assert (await api.client.post(f"/v1/keys/{target}/revoke", headers=api.auth())).is_success
    before = await audit_of(api, target=target)

    response = await api.client.post(f"/v1/keys/{target}/rotate", headers=api.auth())

    assert response.status_code == 409
    assert await audit_of(api, target=target) == before
    assert [e["action"] for e in before] == ["revoked", "created"]


async def test_the_change_is_rolled_back_when_its_audit_row_cannot_be_written(
    api: Api, database_url: str
) -> None:
    """The row is in the change's transaction: without the table, the revocation fails whole."""
    target = (await api.create_key(["read"])).record.prefix
    repository = api.container.apikey_repository()
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("ALTER TABLE audit_log RENAME TO audit_log_away"))
        try:
            with pytest.raises(RepositoryUnavailable):
                await repository.revoke(
                    target, (await repository.get_by_prefix(target)).created_at,
                    actor=AuditActor("game_x", None),
                )  # fmt: skip
        finally:
            async with engine.begin() as connection:
                await connection.execute(text("ALTER TABLE audit_log_away RENAME TO audit_log"))
    finally:
        await engine.dispose()

    record = await repository.get_by_prefix(target)
    assert record is not None and record.revoked_at is None
    assert [e["action"] for e in await audit_of(api, target=target)] == ["created"]


async def test_pages_follow_the_cursor_newest_first_and_the_filter_narrows(api: Api) -> None:
    targets = [(await api.create_key(["read"], name=f"k{n}")).record.prefix for n in range(5)]
    everything = await audit_of(api, limit=1000)
    assert len(everything) == 6  # the admin key and five more
    ids = [e["id"] for e in everything]
    assert ids == sorted(ids, reverse=True)

    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({} if cursor is None else {"cursor": cursor})
        response = await api.client.get("/v1/audit", headers=api.auth(), params=params)
        body = response.json()
        assert len(body["entries"]) <= 2
        seen += body["entries"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == everything
    assert [e["target_prefix"] for e in seen[:5]] == targets[::-1]

    only = await audit_of(api, target=targets[2])
    assert [(e["target_prefix"], e["action"]) for e in only] == [(targets[2], "created")]
    assert await audit_of(api, target="game_nothing") == []


async def test_bad_page_requests_are_422(api: Api) -> None:
    for params in ({"limit": 0}, {"limit": 1001}, {"cursor": "not-a-cursor"}, {"target": "x" * 33}):
        response = await api.client.get("/v1/audit", headers=api.auth(), params=params)
        assert response.status_code == 422, params


async def test_no_key_or_digest_appears_in_the_trail(api: Api) -> None:
    created = await api.client.post("/v1/keys", headers=api.auth(), json={"name": "secret"})
    key = created.json()["key"]
    rotated = await api.client.post(
        f"/v1/keys/{created.json()['prefix']}/rotate", headers=api.auth()
    )
    new_key = rotated.json()["key"]

    response = await api.client.get("/v1/audit", headers=api.auth())

    for secret in (
        key,
        digest(key),
        new_key,
        digest(new_key),
        api.admin_key,
        digest(api.admin_key),
    ):
        assert secret not in response.text


async def test_the_trail_needs_the_admin_scope(api: Api) -> None:
    reader = await api.create_key(["read", "write"])

    response = await api.client.get("/v1/audit", headers=api.auth(reader.plaintext))

    assert response.status_code == 403
    assert (await api.client.get("/v1/audit")).status_code == 401
