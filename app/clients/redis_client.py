"""The Redis client for the single topology (one server by URL), built once per process with
explicit timeouts, retry and a bounded pool. The Sentinel and Cluster clients, built with the same
knobs, are in ``app.clients.redis_topologies``.

redis-py's defaults are a trap for a cache on the authentication path: ``Redis(...)`` retries ten
times with backoff and ``from_url`` not at all, and a dead server can hold a request for seconds.
Here every knob is explicit: short connect and read timeouts, one quick retry on a dropped
connection, and a blocking pool that waits briefly for a free connection instead of opening
unboundedly many.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

DEFAULT_TIMEOUT_MS = 200
DEFAULT_MAX_CONNECTIONS = 64
HEALTH_CHECK_INTERVAL_SECONDS = 30

RedisClient: TypeAlias = Redis | RedisCluster
"""What the cache backends run on: one server (or a Sentinel-managed primary) or a Cluster."""


def one_quick_retry() -> Retry:
    """One immediate retry: a connection dropped by the server (idle timeout, failover) is
    re-opened once, and a server that is really gone costs at most two timeouts."""
    return Retry(NoBackoff(), retries=1)


def connection_knobs(socket_timeout_ms: int, connect_timeout_ms: int) -> dict[str, Any]:
    """The per-connection settings every topology shares."""
    return {
        "socket_timeout": socket_timeout_ms / 1000.0,
        "socket_connect_timeout": connect_timeout_ms / 1000.0,
        "socket_keepalive": True,
        "health_check_interval": HEALTH_CHECK_INTERVAL_SECONDS,
    }


async def ping_primaries(client: RedisClient) -> None:
    """PING the server, or every primary of a cluster: a dead replica is no reason to call the
    cache unavailable, a dead primary (a third of the keys) is."""
    if isinstance(client, RedisCluster):
        await client.ping(target_nodes=RedisCluster.PRIMARIES)
    else:
        await client.ping()


def build_redis_client(
    url: str,
    *,
    socket_timeout_ms: int = DEFAULT_TIMEOUT_MS,
    connect_timeout_ms: int = DEFAULT_TIMEOUT_MS,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> Redis:
    """A client on a bounded pool; no connection is opened until first use."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=connect_timeout_ms / 1000.0,
        retry=one_quick_retry(),
        retry_on_error=[RedisConnectionError],
        **connection_knobs(socket_timeout_ms, connect_timeout_ms),
    )
    return Redis(connection_pool=pool)


def build_optional_redis_client(
    url: str | None,
    socket_timeout_ms: int = DEFAULT_TIMEOUT_MS,
    connect_timeout_ms: int = DEFAULT_TIMEOUT_MS,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> Redis | None:
    """``None`` when no URL is configured, so the container can fall back to memory."""
    if not url:
        return None
    return build_redis_client(
        url,
        socket_timeout_ms=socket_timeout_ms,
        connect_timeout_ms=connect_timeout_ms,
        max_connections=max_connections,
    )
