"""Clients for a Sentinel-managed primary and for a Redis Cluster, with the single client's knobs.

Both get what ``build_redis_client`` gives one server: short connect and read timeouts, one quick
retry, a bounded pool, keepalive and a periodic health check. TLS (``ssl=True`` with an optional
CA file) and ACL username/password apply to the data nodes of both.

* **Sentinel:** ``Sentinel(...).master_for(service)`` returns a client whose pool asks the
  sentinels for the primary's address whenever it opens a connection, and closes idle connections
  when that address changes. A failover is therefore followed without a restart: the next
  connection (including the pub/sub listener's reconnect) goes to the new primary. Its pool
  blocks briefly for a free connection, as the single client's does, instead of failing at once.
  The sentinels' own clients get the same timeouts and single retry (``Redis()``'s default is ten
  retries with backoff) and their own optional ACL credentials.
* **Cluster:** ``RedisCluster(startup_nodes=...)``. Its ``retry`` counts how often a command is
  re-run after a connection error or a timeout, each re-run preceded by re-reading the slot map
  (the failed node is asked last): one retry bounds that to one re-initialisation per command.
  Its connections themselves do not retry. ``max_connections`` is per node, and a node whose
  pool is full fails the command at once (``MaxConnectionsError``) rather than waiting: the cache
  then answers through the database. ``require_full_coverage=False`` keeps the two thirds of a
  cluster that still answer usable while a dead primary's slots wait for its replica.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError

from app.clients.redis_client import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_TIMEOUT_MS,
    connection_knobs,
    one_quick_retry,
)

HostPort = tuple[str, int]


class BlockingSentinelConnectionPool(SentinelConnectionPool, BlockingConnectionPool):
    """The sentinel-managed pool with ``BlockingConnectionPool``'s bounded wait for a free
    connection (``timeout``), instead of failing at once when every connection is in use."""


class SentinelManagedRedis(Redis):
    """The primary's client; closing it also closes its clients of the sentinels."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        pool = self.connection_pool
        if isinstance(pool, SentinelConnectionPool):
            await pool.sentinel_manager.aclose()


def tls_knobs(tls: bool, tls_ca_file: str | None) -> dict[str, Any]:
    """``ssl=True`` (and the CA file) when TLS is on; nothing otherwise, as plain connections
    accept no ``ssl_*`` arguments."""
    if not tls:
        return {}
    knobs: dict[str, Any] = {"ssl": True}
    if tls_ca_file:
        knobs["ssl_ca_certs"] = tls_ca_file
    return knobs


def build_sentinel_client(
    sentinels: Sequence[HostPort],
    service_name: str = "mymaster",
    *,
    username: str | None = None,
    password: str | None = None,
    db: int = 0,
    tls: bool = False,
    tls_ca_file: str | None = None,
    sentinel_username: str | None = None,
    sentinel_password: str | None = None,
    socket_timeout_ms: int = DEFAULT_TIMEOUT_MS,
    connect_timeout_ms: int = DEFAULT_TIMEOUT_MS,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> Redis:
    """A client of the service's current primary; no connection is opened until first use."""
    knobs = connection_knobs(socket_timeout_ms, connect_timeout_ms)
    sentinel_kwargs = {
        **knobs,
        "retry": one_quick_retry(),
        "retry_on_error": [RedisConnectionError],
        "username": sentinel_username,
        "password": sentinel_password,
    }
    manager = Sentinel(list(sentinels), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
    client: Redis = manager.master_for(
        service_name,
        redis_class=SentinelManagedRedis,
        connection_pool_class=BlockingSentinelConnectionPool,
        max_connections=max_connections,
        timeout=connect_timeout_ms / 1000.0,
        retry=one_quick_retry(),
        retry_on_error=[RedisConnectionError],
        username=username,
        password=password,
        db=db,
        **knobs,
        **tls_knobs(tls, tls_ca_file),
    )
    return client


def build_cluster_client(
    nodes: Sequence[HostPort],
    *,
    username: str | None = None,
    password: str | None = None,
    tls: bool = False,
    tls_ca_file: str | None = None,
    socket_timeout_ms: int = DEFAULT_TIMEOUT_MS,
    connect_timeout_ms: int = DEFAULT_TIMEOUT_MS,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> RedisCluster:
    """A cluster client seeded with ``nodes``; it reads the slot map on first use."""
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in nodes],
        require_full_coverage=False,
        retry=one_quick_retry(),
        max_connections=max_connections,
        username=username,
        password=password,
        **connection_knobs(socket_timeout_ms, connect_timeout_ms),
        **tls_knobs(tls, tls_ca_file),
    )


def build_optional_sentinel_client(
    sentinels: Sequence[HostPort] | None, **settings: Any
) -> Redis | None:
    """``None`` when no sentinels are configured, so the container can fall back to memory."""
    return build_sentinel_client(sentinels, **settings) if sentinels else None


def build_optional_cluster_client(
    nodes: Sequence[HostPort] | None, **settings: Any
) -> RedisCluster | None:
    """``None`` when no seed nodes are configured, so the container can fall back to memory."""
    return build_cluster_client(nodes, **settings) if nodes else None


async def shard_channel_pubsub(
    client: RedisCluster, channel: str, *, refresh_slots: bool = False
) -> PubSub:
    """A pub/sub session on the primary that owns ``channel``'s slot, for ``SSUBSCRIBE``.

    Its connection is its own (a one-connection pool with the cluster's connection settings),
    not one borrowed from the node's pool: it never carries other commands, and closing the
    session closes it. redis-py's ``ClusterPubSub`` is not used because it moves subscriptions
    between nodes on its own after a slot-map refresh, and the listener must *see* every move
    (messages published meanwhile were lost: its L1 must be flushed). Here a move shows as an
    error or a ``sunsubscribe`` on this session, and the next session is opened on the new
    owner; ``refresh_slots`` re-reads the slot map first (after a failure: a failover moved the
    primary, or a slot migrated).
    """
    await client.initialize()
    if refresh_slots:
        await client.nodes_manager.initialize()
    node = client.get_node_from_key(channel)
    if node is None:
        raise RedisConnectionError(f"no cluster node serves {channel}'s slot")
    pool = ConnectionPool(
        connection_class=node.connection_class, max_connections=1, **node.connection_kwargs
    )
    return PubSub(connection_pool=pool)
