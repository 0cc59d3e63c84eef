"""Fixtures that run a test against SQLite and against a real PostgreSQL.

Import them into a directory's ``conftest.py``::

    from tests.support.db_fixtures import database_url, module_postgres_url  # noqa: F401

``database_url`` is parametrised (``sqlite``, ``postgres``): a migrated SQLite file per test, or
one throw-away PostgreSQL database per test module, emptied before each test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.databases import migrated_sqlite_url, run_sql, temporary_postgres_database


@pytest.fixture(scope="module")
def module_postgres_url(postgres_url: str) -> Iterator[str]:
    with temporary_postgres_database(postgres_url) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return migrated_sqlite_url(tmp_path)
    url: str = request.getfixturevalue("module_postgres_url")
    run_sql(url, "DELETE FROM api_keys", "DELETE FROM audit_log")
    return url
