"""Where a database's schema stands, so ``db upgrade`` can say what it did.

"schema is up to date" right after applying migrations told an operator nothing about what
changed; reading the revision before and after the upgrade lets the command say "applied 2
migrations (now at 0002)" or "already up to date (0002)".
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, make_url

from app.db.engine import build_engine
from app.db.migrate import alembic_config


def _revision_of(connection: Connection) -> str | None:
    revision: str | None = MigrationContext.configure(connection).get_current_revision()
    return revision


def current_revision(database_url: str) -> str | None:
    """The database's Alembic revision, ``None`` before the first migration. Synchronous."""

    async def read() -> str | None:
        engine = build_engine(database_url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(_revision_of)
        finally:
            await engine.dispose()

    return asyncio.run(read())


def migrations_between(database_url: str, before: str | None, after: str | None) -> int:
    """How many migrations lie between two revisions of the packaged migrations."""
    if after is None or before == after:
        return 0
    script = ScriptDirectory.from_config(alembic_config(database_url))
    return sum(1 for _ in script.iterate_revisions(after, before))


def sqlite_file(database_url: str) -> Path | None:
    """The file of a file-backed SQLite URL (relative to the working folder), else ``None``."""
    url = make_url(database_url)
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:"):  # a URI filename: leave it to SQLite
        return None
    return Path(database)
