"""One ``game-api serve`` host on a Redis Cluster (tiered backend, PostgreSQL), for the
multi-worker cluster tests: the server, its admin key, and keys made over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tests.support.databases import temporary_postgres_database
from tests.support.live_server import LiveServer
from tests.support.multihost import LEASE_SECONDS, POLL_MS
from tests.support.redis_cluster import RedisClusterProcesses


@dataclass
class ClusterHost:
    """What the multihost load and revoke helpers use of a host: one server, no proxies (a
    cluster client follows the node addresses the cluster announces)."""

    name: str
    server: LiveServer
    admin_key: str

    @property
    def port(self) -> int:
        return self.server.port


@contextmanager
def tiered_cluster_host(
    postgres_url: str,
    cluster: RedisClusterProcesses,
    key_prefix: str,
    *,
    workers: int,
    cache_ttl_seconds: int,
) -> Iterator[ClusterHost]:
    """A started server with ``workers`` workers on a throw-away database, stopped on exit."""
    with temporary_postgres_database(postgres_url) as database_url:
        server = LiveServer(
            {
                "APIKEY_CACHE_BACKEND": "tiered",
                "REDIS_TOPOLOGY": "cluster",
                "REDIS_CLUSTER_NODES": cluster.seeds,
                "DATABASE_URL": database_url,
                "APIKEY_CACHE_REDIS_KEY_PREFIX": key_prefix,
                "APIKEY_CACHE_TTL_SECONDS": str(cache_ttl_seconds),
                "APIKEY_CACHE_L1_TTL_SECONDS": str(cache_ttl_seconds),
                "APIKEY_LEASE_SECONDS": str(LEASE_SECONDS),
                "APIKEY_REVOCATION_POLL_MS": str(POLL_MS),
            },
            workers=workers,
        )
        try:
            admin_key = server.create_admin_key()
            server.start()
            yield ClusterHost("cluster", server, admin_key)
        finally:
            server.close()


def create_key(host: ClusterHost, name: str) -> dict[str, str]:
    """A ``read`` key made over HTTP with the host's admin key: its creation answer."""
    response = host.server.post(
        "/v1/keys", api_key=host.admin_key, json_body={"name": name, "scopes": ["read"]}
    )
    assert response.status_code == 201, response.text
    created: dict[str, str] = response.json()
    return created
