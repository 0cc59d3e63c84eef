"""200 000 keys in PostgreSQL: every page answers within the database deadline, a cursor walk
sees every key once, the filters stay cheap, and ``serve --bootstrap-admin`` still starts.

The keys are written with one ``COPY`` (not through the service, one by one). An unpaginated
listing of such a table outlived the 2 s database deadline and answered 503; so did the
bootstrap, which listed every key to look for an admin.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy.engine import make_url

from tests.api.conftest import Api, ApiFactory
from tests.support.databases import temporary_postgres_database
from tests.support.live_server import LiveServer

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

KEY_COUNT = 200_000
RARE_NAME = "rare-"
RARE_EVERY = 40_000  # five rare names, spread through the table
T0 = datetime(2020, 1, 1, tzinfo=UTC)
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_COLUMNS = [
    "prefix",
    "digest",
    "name",
    "scopes",
    "created_at",
    "expires_at",
    "revoked_at",
    "is_admin",
]


def _prefix(index: int) -> str:
    chars = []
    for _ in range(8):
        index, digit = divmod(index, 62)
        chars.append(_BASE62[digit])
    return "game_" + "".join(chars)


def _rows(now: datetime) -> Iterator[tuple[Any, ...]]:
    """Keys with ties in created_at (three per second), every tenth revoked, every seventh
    expired, and admin keys that are all revoked or expired (no active admin among them)."""
    for i in range(KEY_COUNT):
        admin = i % 1000 == 0
        revoked = now - timedelta(days=1) if i % 10 == 0 else None
        expired = now - timedelta(hours=1) if i % 7 == 0 or (admin and revoked is None) else None
        name = f"{RARE_NAME}{i}" if i % RARE_EVERY == 1 else f"player-{i}"
        yield (
            _prefix(i),
            hashlib.sha256(str(i).encode()).hexdigest(),
            name,
            "admin read write" if admin else "read",
            T0 + timedelta(seconds=i // 3),
            expired,
            revoked,
            admin,
        )


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _load(url: str) -> None:
    connection = await asyncpg.connect(_dsn(url), timeout=10)
    try:
        await connection.copy_records_to_table(
            "api_keys", records=_rows(datetime.now(UTC)), columns=_COLUMNS
        )
        await connection.execute("ANALYZE api_keys")
    finally:
        await connection.close()


async def _count(url: str, where: str = "TRUE") -> int:
    connection = await asyncpg.connect(_dsn(url), timeout=10)
    try:
        count: int = await connection.fetchval(f"SELECT count(*) FROM api_keys WHERE {where}")  # noqa: S608
        return count
    finally:
        await connection.close()


async def _plan(url: str, query: str, *args: Any) -> str:
    connection = await asyncpg.connect(_dsn(url), timeout=10)
    try:
        rows = await connection.fetch("EXPLAIN " + query, *args)
        return "\n".join(row[0] for row in rows)
    finally:
        await connection.close()


@pytest.fixture(scope="module")
def big_database(postgres_url: str) -> Iterator[str]:
    with temporary_postgres_database(postgres_url) as url:
        asyncio.run(_load(url))
        yield url


@pytest.fixture
async def big_api(make_api: ApiFactory, big_database: str) -> AsyncIterator[tuple[Api, str]]:
    """The in-process app on the big table, with an admin key revoked after the test so that
    ``--bootstrap-admin`` still finds no active admin, whatever order the tests run in."""
    api = await make_api(DATABASE_URL=big_database, create_admin=False)
    admin = await api.service.create("big-admin", ["admin"], 600)
    api.admin_key = admin.plaintext
    try:
        yield api, big_database
    finally:
        await api.service.revoke(admin.record.prefix)


async def test_a_cursor_walk_of_200_000_keys_sees_each_once_every_page_in_time(
    big_api: tuple[Api, str],
) -> None:
    api, url = big_api
    total = await _count(url)
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        response = await api.client.get("/v1/keys", headers=api.auth(), params=params)
        # 503 would be the database deadline (DATABASE_TIMEOUT_SECONDS, 2 s) running out.
        assert response.status_code == 200, (len(seen), response.text)
        body = response.json()
        seen += [key["prefix"] for key in body["keys"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break

    assert total > KEY_COUNT
    assert len(seen) == total
    assert len(set(seen)) == total


async def test_the_first_page_and_the_filters_answer_within_the_deadline(
    big_api: tuple[Api, str],
) -> None:
    api, url = big_api

    first = await api.client.get("/v1/keys", headers=api.auth())
    active = await api.client.get(
        "/v1/keys", headers=api.auth(), params={"active": "true", "limit": 1000}
    )
    rare = await api.client.get(
        "/v1/keys", headers=api.auth(), params={"name_prefix": RARE_NAME, "limit": 1000}
    )
    rare_active = await api.client.get(
        "/v1/keys",
        headers=api.auth(),
        params={"name_prefix": RARE_NAME, "active": "true", "limit": 1000},
    )

    for response in (first, active, rare, rare_active):
        assert response.status_code == 200, response.text
    assert len(first.json()["keys"]) == 100
    assert all(key["active"] for key in active.json()["keys"])
    assert len(active.json()["keys"]) == 1000
    rare_names = {key["name"] for key in rare.json()["keys"]}
    assert rare_names == {f"{RARE_NAME}{i}" for i in range(1, KEY_COUNT, RARE_EVERY)}
    expected_active = await _count(
        url,
        f"name LIKE '{RARE_NAME}%' AND revoked_at IS NULL "
        "AND (expires_at IS NULL OR expires_at > now())",
    )
    assert len(rare_active.json()["keys"]) == expected_active


async def test_pages_and_the_admin_check_are_index_reads(big_database: str) -> None:
    page = await _plan(
        big_database,
        "SELECT * FROM api_keys WHERE (created_at, prefix) > ($1, $2) "
        "ORDER BY created_at, prefix LIMIT 1001",
        T0 + timedelta(hours=10),
        _prefix(0),
    )
    admin = await _plan(
        big_database,
        "SELECT prefix FROM api_keys WHERE is_admin = true AND revoked_at IS NULL "
        "AND (expires_at IS NULL OR expires_at > $1) LIMIT 1",
        datetime.now(UTC),
    )

    assert "ix_api_keys_created_at_prefix" in page, page
    assert "ix_api_keys_admin_revoked_expires" in admin, admin


def test_serve_bootstrap_admin_starts_on_200_000_keys_and_answers(big_database: str) -> None:
    server = LiveServer({"DATABASE_URL": big_database}, workers=1, serve_args=["--bootstrap-admin"])
    try:
        server.start()
        match = re.search(r"key:\s+(game_\S+)", server.log_text())
        assert match is not None, server.log_text()
        admin_key = match.group(1)

        me = server.get("/v1/me", api_key=admin_key)
        page = server.get("/v1/keys?limit=1000", api_key=admin_key)

        assert me.status_code == 200
        assert sorted(me.json()["scopes"]) == ["admin", "read", "write"]
        assert page.status_code == 200
        assert len(page.json()["keys"]) == 1000
    finally:
        server.close()
