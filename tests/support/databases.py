"""Databases for tests: a migrated SQLite file, or a throw-away PostgreSQL database.

Each PostgreSQL user gets a database of its own (created from the server in
``TEST_DATABASE_URL`` and dropped afterwards), so runs are repeatable and tests running at the
same time never see each other's rows.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import make_url

from app.db.migrate import upgrade_database


def _asyncpg_dsn(sqlalchemy_url: str, database: str | None = None) -> str:
    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    if database is not None:
        url = url.set(database=database)
    return url.render_as_string(hide_password=False)


async def _execute(dsn: str, *statements: str) -> None:
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


def run_sql(sqlalchemy_url: str, *statements: str) -> None:
    """Run statements on the database of ``sqlalchemy_url`` (from synchronous test code)."""
    asyncio.run(_execute(_asyncpg_dsn(sqlalchemy_url), *statements))


async def execute_sql(sqlalchemy_url: str, *statements: str) -> None:
    """``run_sql`` for async tests."""
    await _execute(_asyncpg_dsn(sqlalchemy_url), *statements)


@contextmanager
def temporary_postgres_database(server_url: str, *, migrate: bool = True) -> Iterator[str]:
    """A new, empty (then migrated) database on the server of ``server_url``; dropped on exit."""
    name = f"game_api_test_{uuid.uuid4().hex[:12]}"
    run_sql(server_url, f'CREATE DATABASE "{name}"')
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    try:
        if migrate:
            upgrade_database(url)
        yield url
    finally:
        run_sql(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrated_sqlite_url(directory: Path) -> str:
    url = f"sqlite+aiosqlite:///{directory / 'game-api.db'}"
    upgrade_database(url)
    return url
