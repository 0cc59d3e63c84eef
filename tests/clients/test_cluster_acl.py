"""ACL credentials reach every node of a cluster, from the settings through the container.

A 3-primary cluster whose default user is off: only ``REDIS_USERNAME``/``REDIS_PASSWORD`` let a
client in. The cache built by the container stores and reads on every primary; with a wrong
password the breaker-guarded backend answers "miss" (the database would decide), never raises.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from app.core.container import Container
from app.services.guarded_cache_backend import CircuitBreakingCacheBackend
from tests.support.containers import make_container
from tests.support.redis_cluster import RedisClusterProcesses

pytestmark = [pytest.mark.slow, pytest.mark.redis_server]

USER, PASSWORD = "game-api", "cluster-acl-test-password"


@pytest.fixture(scope="module")
def acl_cluster() -> Iterator[RedisClusterProcesses]:
    with RedisClusterProcesses(replicas_per_primary=0, acl_user=(USER, PASSWORD)) as cluster:
        yield cluster


def cache_on(
    containers: list[Container],
    monkeypatch: pytest.MonkeyPatch,
    cluster: RedisClusterProcesses,
    password: str,
) -> CircuitBreakingCacheBackend:
    monkeypatch.setenv("APIKEY_CACHE_BACKEND", "redis")
    monkeypatch.setenv("REDIS_TOPOLOGY", "cluster")
    monkeypatch.setenv("REDIS_CLUSTER_NODES", cluster.seeds)
    monkeypatch.setenv("REDIS_USERNAME", USER)
    monkeypatch.setenv("REDIS_PASSWORD", password)
    monkeypatch.setenv("REDIS_CONNECT_TIMEOUT_MS", "2000")
    monkeypatch.setenv("REDIS_SOCKET_TIMEOUT_MS", "2000")
    cache = make_container(containers, None).apikey_cache()
    assert isinstance(cache, CircuitBreakingCacheBackend)
    return cache


async def test_the_container_authenticates_as_the_configured_user_on_every_primary(
    acl_cluster: RedisClusterProcesses,
    containers: list[Container],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = cache_on(containers, monkeypatch, acl_cluster, PASSWORD)
    client = cache.inner.client  # type: ignore[attr-defined]
    try:
        keys = [f"{n:064x}" for n in range(60)]
        for key in keys:
            await cache.set(key, SimpleNamespace(apiKey="game_AbCd1234", active=True), 60)
        for key in keys:
            assert await cache.get(key) is not None
        owners = {client.get_node_from_key(cache.inner.redis_key(key)).name for key in keys}  # type: ignore[attr-defined]
        assert len(owners) == 3  # every primary was written to, as the configured user
        who = await client.execute_command("ACL WHOAMI", target_nodes=client.get_primaries()[0])
        assert who in (USER, USER.encode())
        await cache.clear()
    finally:
        await client.aclose()


async def test_a_wrong_password_is_a_miss_not_an_error(
    acl_cluster: RedisClusterProcesses,
    containers: list[Container],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = cache_on(containers, monkeypatch, acl_cluster, "not-the-password-at-all")
    try:
        assert await cache.get("ab" * 32) is None
    finally:
        await cache.inner.client.aclose()  # type: ignore[attr-defined]
