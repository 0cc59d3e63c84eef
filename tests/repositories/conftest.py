"""A SQL repository over SQLite and a real PostgreSQL, for every repository test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.engine import build_engine, build_session_factory
from app.repositories.sql import SqlApiKeyRepository
from tests.support.db_fixtures import database_url, module_postgres_url  # noqa: F401


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:  # noqa: F811
    engine = build_engine(database_url, timeout_seconds=5.0)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def repository(engine: AsyncEngine) -> SqlApiKeyRepository:
    return SqlApiKeyRepository(build_session_factory(engine), timeout_seconds=5.0)
