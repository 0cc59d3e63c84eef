"""The queries behind ``serve --bootstrap-admin`` and listing pages, and migration 0003."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.migrate import upgrade_database
from app.repositories.sql import SqlApiKeyRepository
from tests.repositories.test_sql_repository import make_record

NOW = datetime(2030, 6, 1, tzinfo=UTC)


async def test_no_keys_means_no_active_admin(repository: SqlApiKeyRepository) -> None:
    assert await repository.has_active_admin(NOW) is False


async def test_revoked_expired_and_non_admin_keys_are_not_an_active_admin(
    repository: SqlApiKeyRepository,
) -> None:
    await repository.add(make_record(scopes=("read", "write"))[0])
    await repository.add(make_record(scopes=("admin",), expires_at=NOW - timedelta(seconds=1))[0])
    revoked, _ = make_record(scopes=("admin", "read"))
    await repository.add(revoked)
    await repository.revoke(revoked.prefix, NOW - timedelta(days=1))

    assert await repository.has_active_admin(NOW) is False


@pytest.mark.parametrize(
    "expires_at", [None, NOW + timedelta(seconds=1)], ids=["no-expiry", "expires-later"]
)
async def test_an_unrevoked_unexpired_admin_key_is_found(
    repository: SqlApiKeyRepository, expires_at: datetime | None
) -> None:
    await repository.add(make_record(scopes=("read",))[0])
    await repository.add(make_record(scopes=("admin", "read", "write"), expires_at=expires_at)[0])

    assert await repository.has_active_admin(NOW) is True


async def test_the_admin_flag_is_set_from_the_scopes_at_insert(
    repository: SqlApiKeyRepository, engine: AsyncEngine
) -> None:
    admin, _ = make_record(scopes=("admin", "write"))
    reader, _ = make_record(scopes=("read",))
    await repository.add(admin)
    await repository.add(reader)

    async with engine.connect() as connection:
        rows = dict((await connection.execute(text("SELECT prefix, is_admin FROM api_keys"))).all())

    assert rows == {admin.prefix: True, reader.prefix: False}


def test_migration_0003_backfills_the_admin_flag(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade_database(url, "0002")
    with sqlite3.connect(path) as connection:
        for prefix, scopes in [
            ("game_AAAAAAAA", "admin read"),
            ("game_BBBBBBBB", "read write"),
            ("game_CCCCCCCC", "read admin"),
            ("game_DDDDDDDD", ""),
        ]:
            connection.execute(
                "INSERT INTO api_keys (prefix, digest, name, scopes, created_at) "
                "VALUES (?, ?, 'old', ?, '2030-01-01 00:00:00.000000')",
                (prefix, prefix.lower() + "x" * 40, scopes),
            )

    upgrade_database(url)

    with sqlite3.connect(path) as connection:
        flags = dict(connection.execute("SELECT prefix, is_admin FROM api_keys").fetchall())
        indexes = {row[1] for row in connection.execute("PRAGMA index_list('api_keys')")}
    assert flags == {
        "game_AAAAAAAA": 1,
        "game_BBBBBBBB": 0,
        "game_CCCCCCCC": 1,
        "game_DDDDDDDD": 0,
    }
    assert {"ix_api_keys_created_at_prefix", "ix_api_keys_admin_revoked_expires"} <= indexes


def test_sqlite_reads_pages_and_admins_through_the_indexes(tmp_path: Path) -> None:
    """The query plans, not timings: each query is an index search, never a table scan."""
    import sqlite3

    path = tmp_path / "plan.db"
    upgrade_database(f"sqlite+aiosqlite:///{path}")
    with sqlite3.connect(path) as connection:
        page_plan = " ".join(
            str(row[-1])
            for row in connection.execute(
                "EXPLAIN QUERY PLAN SELECT * FROM api_keys "
                "WHERE (created_at, prefix) > (?, ?) ORDER BY created_at, prefix LIMIT 101",
                ("2030-01-01 00:00:00.000000", "game_AAAAAAAA"),
            )
        )
        admin_plan = " ".join(
            str(row[-1])
            for row in connection.execute(
                "EXPLAIN QUERY PLAN SELECT prefix FROM api_keys WHERE is_admin = 1 "
                "AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?) LIMIT 1",
                ("2030-01-01 00:00:00.000000",),
            )
        )
    assert "SEARCH api_keys USING INDEX ix_api_keys_created_at_prefix" in page_plan, page_plan
    assert "ix_api_keys_admin_revoked_expires" in admin_plan, admin_plan
