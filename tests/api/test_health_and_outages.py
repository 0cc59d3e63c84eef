"""Liveness, readiness, and what callers see when the database or Redis is down."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.domain.keys import generate_api_key
from tests.api.conftest import Api, ApiFactory
from tests.support.databases import execute_sql, run_sql, temporary_postgres_database
from tests.support.redis_server import free_port


def unreachable_postgres_url() -> str:
    return f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/test"


@pytest.mark.parametrize("path", ["/livez", "/healthz"])
async def test_livez_and_its_alias_healthz_are_trivial(api: Api, path: str) -> None:
    response = await api.client.get(path)

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize("path", ["/livez", "/healthz"])
async def test_livez_is_200_with_the_database_unreachable(make_api: ApiFactory, path: str) -> None:
    api = await make_api(DATABASE_URL=unreachable_postgres_url(), create_admin=False)

    assert (await api.client.get("/readyz")).status_code == 503
    response = await api.client.get(path)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_with_the_memory_backend_checks_the_database(api: Api) -> None:
    response = await api.client.get("/readyz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"] == {"database": "ok", "redis": "not used"}
    assert body["cache_backend"] == "memory"
    assert {"cache_hits", "cache_misses", "repository_lookups"} <= set(body["cache_metrics"])


async def test_readyz_checks_redis_when_the_backend_uses_it(
    make_api: ApiFactory, database_url: str, redis_url: str, key_prefix: str
) -> None:
    api = await make_api(
        DATABASE_URL=database_url,
        APIKEY_CACHE_BACKEND="redis",
        REDIS_URL=redis_url,
        APIKEY_CACHE_REDIS_KEY_PREFIX=key_prefix,
    )

    response = await api.client.get("/readyz")

    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "redis": "ok"}


@pytest.mark.parametrize("backend", ["redis", "tiered"])
async def test_readyz_is_200_degraded_when_redis_is_unreachable(
    make_api: ApiFactory, database_url: str, backend: str
) -> None:
    api = await make_api(
        DATABASE_URL=database_url,
        APIKEY_CACHE_BACKEND=backend,
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
    )

    response = await api.client.get("/readyz")

    # The worker can still authenticate (from the database), so it stays in rotation.
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["checks"] == {"database": "ok", "redis": "unavailable"}
    # Redis down never fails a valid key: the breaker sends lookups to the database.
    assert (await api.client.get("/v1/me", headers=api.auth())).status_code == 200


async def test_unreachable_database_is_503_never_401(make_api: ApiFactory) -> None:
    api = await make_api(DATABASE_URL=unreachable_postgres_url(), create_admin=False)
    well_formed = generate_api_key().plaintext

    me = await api.client.get("/v1/me", headers=api.auth(well_formed))
    admin_route = await api.client.get("/v1/keys", headers=api.auth(well_formed))
    ready = await api.client.get("/readyz")

    for response in (me, admin_route):
        assert response.status_code == 503
        assert response.json() == {"detail": "the key database is unavailable; try again shortly"}
        assert well_formed not in response.text
    assert ready.status_code == 503
    assert ready.json()["status"] == "unavailable"
    assert ready.json()["checks"]["database"] == "unavailable"
    # A malformed key is refused offline, whatever the database's state.
    assert (await api.client.get("/v1/me", headers=api.auth("junk"))).status_code == 401


@pytest.fixture
def outage_database(postgres_url: str) -> Iterator[str]:
    with temporary_postgres_database(postgres_url) as url:
        yield url
        run_sql(postgres_url, f'ALTER DATABASE "{url.rsplit("/", 1)[1]}" ALLOW_CONNECTIONS true')


@pytest.mark.postgres
async def test_postgres_outage_cached_keys_keep_working_uncached_get_503(
    make_api: ApiFactory, postgres_url: str, outage_database: str
) -> None:
    api = await make_api(DATABASE_URL=outage_database, APIKEY_CACHE_BACKEND="memory")
    used = await api.create_key(["read"])
    never_used = await api.create_key(["read"])
    assert (await api.client.get("/v1/me", headers=api.auth(used.plaintext))).status_code == 200

    name = outage_database.rsplit("/", 1)[1]
    await execute_sql(
        postgres_url,
        f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false',
        # ``name`` is the throw-away database's generated name, not outside input.
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",  # noqa: S608
    )

    cached = await api.client.get("/v1/me", headers=api.auth(used.plaintext))
    uncached = await api.client.get("/v1/me", headers=api.auth(never_used.plaintext))
    ready = await api.client.get("/readyz")

    assert cached.status_code == 200
    assert uncached.status_code == 503
    assert uncached.json() == {"detail": "the key database is unavailable; try again shortly"}
    # A warm cache does not make the worker ready: new keys and misses would all fail.
    assert ready.status_code == 503
    assert ready.json()["status"] == "unavailable"
    assert ready.json()["checks"]["database"] == "unavailable"

    await execute_sql(postgres_url, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')

    recovered = await api.client.get("/v1/me", headers=api.auth(never_used.plaintext))
    assert recovered.status_code == 200
    assert (await api.client.get("/readyz")).status_code == 200


async def test_readyz_reports_the_tiered_invalidation_listener(
    make_api: ApiFactory, database_url: str, redis_url: str, key_prefix: str
) -> None:
    api = await make_api(
        DATABASE_URL=database_url,
        APIKEY_CACHE_BACKEND="tiered",
        REDIS_URL=redis_url,
        APIKEY_CACHE_REDIS_KEY_PREFIX=key_prefix,
    )

    response = await api.client.get("/readyz")

    assert response.status_code == 200
    body = response.json()
    assert body["checks"] == {"database": "ok", "redis": "ok"}
    assert body["invalidation_listener"]["state"] == "subscribed"
    assert body["invalidation_listener"]["subscriptions"] >= 1


async def test_readyz_has_no_listener_report_for_the_redis_backend(
    make_api: ApiFactory, database_url: str, redis_url: str, key_prefix: str
) -> None:
    api = await make_api(
        DATABASE_URL=database_url,
        APIKEY_CACHE_BACKEND="redis",
        REDIS_URL=redis_url,
        APIKEY_CACHE_REDIS_KEY_PREFIX=key_prefix,
    )

    assert "invalidation_listener" not in (await api.client.get("/readyz")).json()
