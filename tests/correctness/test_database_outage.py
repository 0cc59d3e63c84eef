"""Database unreachable at HTTP level: cached keys keep working, uncached keys get 503 with a
JSON body (never 401, never 500), and the service recovers without a restart.

SQLite: the database file's directory is moved away (and the pool dropped, as a real outage
would drop its connections); PostgreSQL: the app talks to it through a TCP proxy the test cuts
(refused and reset connections) and restores on the same port.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from app.domain.errors import RepositoryUnavailable
from app.domain.keys import generate_api_key
from app.services.apikey_cache_backend import InMemoryApiKeyCacheBackend
from app.services.apikey_service import ApiKeyService, CreatedKey
from tests.correctness.http_app import ServedApp, served_app
from tests.correctness.support import ControlledRepository
from tests.correctness.tcp_proxy import TcpProxy
from tests.support.databases import migrated_sqlite_url
from tests.support.db_fixtures import module_postgres_url  # noqa: F401

UNAVAILABLE = {"detail": "the key database is unavailable; try again shortly"}


async def _check_outage_and_recovery(
    served: ServedApp, cut: Callable[[], Awaitable[None]], restore: Callable[[], Awaitable[None]]
) -> None:
    cached = await served.service.create("cached", ["read"])
    uncached = await served.service.create("uncached", ["read"])
    assert (await served.client.get("/v1/me", headers=served.auth(cached))).status_code == 200

    await cut()
    try:
        for _ in range(2):
            ok = await served.client.get("/v1/me", headers=served.auth(cached))
            assert ok.status_code == 200 and ok.json()["prefix"] == cached.record.prefix
            for headers in (served.auth(uncached), served.auth(generate_api_key().plaintext)):
                down = await served.client.get("/v1/me", headers=headers)
                assert down.status_code == 503
                assert down.headers["content-type"].startswith("application/json")
                assert down.json() == UNAVAILABLE
            malformed = await served.client.get("/v1/me", headers=served.auth("not-a-key"))
            assert malformed.status_code == 401
    finally:
        await restore()

    back = await served.client.get("/v1/me", headers=served.auth(uncached))
    assert back.status_code == 200 and back.json()["prefix"] == uncached.record.prefix


@pytest.fixture
def sqlite_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "db"
    directory.mkdir()
    return directory


@pytest.mark.slow
async def test_sqlite_file_gone_then_back(sqlite_dir: Path) -> None:
    url = await asyncio.to_thread(migrated_sqlite_url, sqlite_dir)
    away = sqlite_dir.with_name("db-away")

    async with served_app(DATABASE_URL=url, DATABASE_TIMEOUT_SECONDS=1.0) as served:

        async def cut() -> None:
            await asyncio.to_thread(sqlite_dir.rename, away)
            await served.container.database_engine().dispose()

        async def restore() -> None:
            await asyncio.to_thread(away.rename, sqlite_dir)

        await _check_outage_and_recovery(served, cut, restore)


@pytest.fixture
async def postgres_proxy(module_postgres_url: str) -> AsyncIterator[tuple[TcpProxy, str]]:  # noqa: F811
    target = make_url(module_postgres_url)
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
    await proxy.start()
    try:
        yield proxy, target.set(port=proxy.port).render_as_string(hide_password=False)
    finally:
        await proxy.stop()


@pytest.mark.slow
@pytest.mark.postgres
async def test_postgresql_behind_a_cut_connection_then_back(
    postgres_proxy: tuple[TcpProxy, str],
) -> None:
    proxy, url = postgres_proxy
    async with served_app(DATABASE_URL=url, DATABASE_TIMEOUT_SECONDS=1.0) as served:
        await _check_outage_and_recovery(served, proxy.stop, proxy.start)


async def test_repository_unavailable_at_service_level(repository: ControlledRepository) -> None:
    service = ApiKeyService(InMemoryApiKeyCacheBackend(), repository)
    cached: CreatedKey = await service.create("cached", ["read"])
    uncached = await service.create("uncached", ["read"])
    await service.authenticate(cached.plaintext)

    repository.unavailable = True
    assert (await service.authenticate(cached.plaintext)).prefix == cached.record.prefix
    with pytest.raises(RepositoryUnavailable):
        await service.authenticate(uncached.plaintext)
    # An outage is not "unknown": nothing was remembered in the negative cache.
    repository.unavailable = False
    assert (await service.authenticate(uncached.plaintext)).prefix == uncached.record.prefix
