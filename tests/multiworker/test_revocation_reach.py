"""Does a revocation reach every gunicorn worker? The real ``game-api serve --workers 3``.

``redis``: every worker reads the one shared keyspace, so once revoke returns, every request on
any worker is refused. ``memory``: each worker has its own cache, so the documented caveat holds:
a worker that cached the key keeps admitting it until its entry's TTL runs out; after that every
worker refuses it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from redis.asyncio import Redis

from app.domain.keys import digest
from tests.support.live_server import LiveServer, worker_of

pytestmark = pytest.mark.slow

WORKERS = 3
FRESH_REQUESTS_AFTER_REVOKE = 200
MEMORY_TTL_SECONDS = 5


@pytest.fixture
def servers() -> Iterator[list[LiveServer]]:
    started: list[LiveServer] = []
    try:
        yield started
    finally:
        for server in started:
            server.close()


def start(servers: list[LiveServer], config_env: dict[str, str]) -> tuple[LiveServer, str]:
    server = LiveServer(config_env, workers=WORKERS)
    servers.append(server)
    admin_key = server.create_admin_key()
    server.start()
    return server, admin_key


def create_key(server: LiveServer, admin_key: str) -> dict[str, str]:
    response = server.post(
        "/v1/keys", api_key=admin_key, json_body={"name": "player-client", "scopes": ["read"]}
    )
    assert response.status_code == 201, response.text
    created: dict[str, str] = response.json()
    return created


def refused_everywhere(server: LiveServer, key: str, minimum: int) -> tuple[list[int], set[str]]:
    """At least ``minimum`` fresh requests, continuing until every worker has answered."""
    statuses: list[int] = []
    workers: set[str] = set()
    deadline = time.monotonic() + 60
    while len(statuses) < minimum or (len(workers) < WORKERS and time.monotonic() < deadline):
        response = server.get("/v1/me", api_key=key)
        statuses.append(response.status_code)
        workers.add(worker_of(response))
    return statuses, workers


async def test_redis_backend_revocation_reaches_every_worker_at_once(
    servers: list[LiveServer], redis_url: str, key_prefix: str, real_redis: Redis
) -> None:
    server, admin_key = start(
        servers,
        {
            "APIKEY_CACHE_BACKEND": "redis",
            "REDIS_URL": redis_url,
            "APIKEY_CACHE_REDIS_KEY_PREFIX": key_prefix,
            "APIKEY_CACHE_TTL_SECONDS": "300",
        },
    )
    key = create_key(server, admin_key)
    assert len(server.prime_every_worker(key["key"])) == WORKERS
    assert await real_redis.get(key_prefix + digest(key["key"])) is not None

    revoked = server.post(f"/v1/keys/{key['prefix']}/revoke", api_key=admin_key)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["cache_invalidation"]["confirmed"] is True
    assert revoked.json()["cache_invalidation"]["scope"] == "shared"

    statuses, workers = refused_everywhere(server, key["key"], FRESH_REQUESTS_AFTER_REVOKE)
    assert len(statuses) >= FRESH_REQUESTS_AFTER_REVOKE
    assert set(statuses) == {401}
    assert len(workers) == WORKERS


def test_memory_backend_revocation_is_final_on_every_worker_when_it_returns(
    servers: list[LiveServer],
) -> None:
    """The per-worker dict used to keep a revoked key until its TTL; the event log and the
    workers' leases now make the revoke return only once every worker has dropped it."""
    server, admin_key = start(
        servers,
        {"APIKEY_CACHE_BACKEND": "memory", "APIKEY_CACHE_TTL_SECONDS": str(MEMORY_TTL_SECONDS)},
    )
    key = create_key(server, admin_key)
    primed = server.prime_every_worker(key["key"])
    assert len(primed) == WORKERS

    revoked = server.post(f"/v1/keys/{key['prefix']}/revoke", api_key=admin_key)

    assert revoked.status_code == 200, revoked.text
    finality = revoked.json()["finality"]
    assert finality["final"] is True
    assert finality["expected"] == WORKERS - 1  # every other worker, the revoking one aside
    statuses, workers = refused_everywhere(server, key["key"], FRESH_REQUESTS_AFTER_REVOKE)
    assert len(statuses) >= FRESH_REQUESTS_AFTER_REVOKE
    assert set(statuses) == {401}, "a worker admitted the key after the revoke returned"
    assert len(workers) == WORKERS
