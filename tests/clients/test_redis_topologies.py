"""The Sentinel and Cluster clients carry the single client's knobs, and the container picks them.

Nothing here opens a connection: the clients are inspected as built (the real servers are in
tests/services/test_cluster_contract.py and the failover tests).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import SSLConnection

from app.clients.redis_topologies import (
    BlockingSentinelConnectionPool,
    SentinelManagedRedis,
    build_cluster_client,
    build_sentinel_client,
)
from app.core.container import Container
from app.services.guarded_cache_backend import CircuitBreakingCacheBackend
from app.services.redis_cache_backend import RedisApiKeyCacheBackend
from tests.support.containers import make_container


async def test_the_sentinel_client_follows_the_primary_with_bounded_knobs(tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("not read until a connection opens")
    client = build_sentinel_client(
        [("127.0.0.1", 26379), ("::1", 26380)],
        "cache",
        username="app",
        password="data-secret",
        db=3,
        tls=True,
        tls_ca_file=str(ca_file),
        sentinel_password="sentinel-secret",
        socket_timeout_ms=150,
        connect_timeout_ms=120,
        max_connections=7,
    )
    try:
        assert isinstance(client, SentinelManagedRedis)
        pool = client.connection_pool
        assert isinstance(pool, BlockingSentinelConnectionPool)
        assert pool.service_name == "cache" and pool.is_master
        assert pool.max_connections == 7 and pool.timeout == pytest.approx(0.12)
        kwargs = pool.connection_kwargs
        assert kwargs["socket_timeout"] == pytest.approx(0.15)
        assert kwargs["socket_connect_timeout"] == pytest.approx(0.12)
        assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("app", "data-secret", 3)
        assert kwargs["retry"].get_retries() == 1
        assert issubclass(pool.connection_class, SSLConnection)
        assert kwargs["ssl_ca_certs"] == str(ca_file)
        sentinels = pool.sentinel_manager.sentinels
        assert len(sentinels) == 2
        for sentinel in sentinels:
            sentinel_kwargs = sentinel.connection_pool.connection_kwargs
            assert sentinel_kwargs["password"] == "sentinel-secret"
            assert sentinel_kwargs["socket_timeout"] == pytest.approx(0.15)
            assert sentinel_kwargs["retry"].get_retries() == 1
    finally:
        await client.aclose()


async def test_the_cluster_client_has_one_retry_and_bounded_pools() -> None:
    client = build_cluster_client(
        [("127.0.0.1", 7000), ("127.0.0.1", 7001)],
        username="app",
        password="data-secret",
        tls=True,
        socket_timeout_ms=150,
        connect_timeout_ms=120,
        max_connections=9,
    )
    try:
        assert client.retry.get_retries() == 1
        kwargs = client.connection_kwargs
        assert kwargs["socket_timeout"] == pytest.approx(0.15)
        assert kwargs["socket_connect_timeout"] == pytest.approx(0.12)
        assert kwargs["max_connections"] == 9
        assert (kwargs["username"], kwargs["password"]) == ("app", "data-secret")
        assert kwargs["connection_class"] is SSLConnection
        seeds = {node.name for node in client.nodes_manager.startup_nodes.values()}
        assert seeds == {"127.0.0.1:7000", "127.0.0.1:7001"}
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("topology", "address", "value", "client_class"),
    [
        ("single", "REDIS_URL", "redis://127.0.0.1:6390/0", Redis),
        ("sentinel", "REDIS_SENTINELS", "127.0.0.1:26390", SentinelManagedRedis),
        ("cluster", "REDIS_CLUSTER_NODES", "127.0.0.1:7390", RedisCluster),
    ],
)
async def test_the_container_selects_the_client_on_the_topology(
    containers: list[Container],
    monkeypatch: pytest.MonkeyPatch,
    topology: str,
    address: str,
    value: str,
    client_class: type,
) -> None:
    monkeypatch.setenv("APIKEY_CACHE_BACKEND", "redis")
    monkeypatch.setenv("REDIS_TOPOLOGY", topology)
    monkeypatch.setenv(address, value)
    container = make_container(containers, None)
    client = container.redis_client()
    try:
        assert type(client) is client_class
        assert container.redis_client() is client  # one client per process
        cache = container.apikey_cache()
        assert isinstance(cache, CircuitBreakingCacheBackend)
        assert isinstance(cache.inner, RedisApiKeyCacheBackend)
        assert cache.inner.client is client
    finally:
        await client.aclose()
