"""How each cache backend is put together: the one recipe, used by the container and by
``build_apikey_cache_backend`` alike, so both build the same object graph.

* ``memory_cache`` — the per-process dict.
* ``guard_cache`` / ``redis_cache`` — the Redis backend behind a circuit breaker and a per-call
  deadline (a cache outage costs speed, never a valid key).
* ``tiered_cache`` — an L1 per process over the guarded Redis backend, with the invalidation
  listener wired to the L1 (the listener knows nothing of the cache; these callbacks are the
  only link).
* ``signed_records_beside`` — the authenticated record store beside a Redis-backed cache (none
  for the memory backend), sharing that cache's client, key prefix and circuit breaker.
* ``shared_cache_or_memory`` — the documented fallback: a shared backend asked for without a
  Redis URL gives the memory backend and one warning.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from redis.asyncio.cluster import RedisCluster

from app.clients.redis_client import RedisClient
from app.services.cache_protocol import CoherentCacheBackend
from app.services.circuit_breaker import CircuitBreaker
from app.services.guarded_cache_backend import CircuitBreakingCacheBackend
from app.services.invalidation_listener import InvalidationListener, Publish
from app.services.local_tier import LocalTier
from app.services.memory_cache_backend import InMemoryApiKeyCacheBackend
from app.services.metrics import CacheMetrics
from app.services.record_cache import SignedRecordCache
from app.services.redis_cache_backend import DEFAULT_KEY_PREFIX, RedisApiKeyCacheBackend
from app.services.tiered_cache_backend import (
    INVALIDATION_CHANNEL_SUFFIX,
    TieredApiKeyCacheBackend,
)

logger = logging.getLogger(__name__)

BACKEND_NAMES = ("memory", "redis", "tiered")


def memory_cache(max_entries: int = 100_000) -> InMemoryApiKeyCacheBackend:
    return InMemoryApiKeyCacheBackend(max_entries=max_entries)


def guard_cache(
    inner: CoherentCacheBackend,
    *,
    failure_threshold: int = 5,
    reset_after_seconds: float = 5.0,
    operation_timeout_seconds: float = 0.25,
    metrics: CacheMetrics | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> CircuitBreakingCacheBackend:
    """``inner`` behind a circuit breaker and a per-call deadline."""
    breaker = CircuitBreaker(
        failure_threshold=failure_threshold, reset_after_seconds=reset_after_seconds, clock=clock
    )
    return CircuitBreakingCacheBackend(
        inner, breaker, operation_timeout_seconds=operation_timeout_seconds, metrics=metrics
    )


def redis_cache(
    client: RedisClient,
    *,
    key_prefix: str = DEFAULT_KEY_PREFIX,
    failure_threshold: int = 5,
    reset_after_seconds: float = 5.0,
    operation_timeout_ms: int = 200,
    metrics: CacheMetrics | None = None,
) -> CircuitBreakingCacheBackend:
    """The shared Redis keyspace, guarded."""
    return guard_cache(
        RedisApiKeyCacheBackend(client, key_prefix=key_prefix),
        failure_threshold=failure_threshold,
        reset_after_seconds=reset_after_seconds,
        operation_timeout_seconds=operation_timeout_ms / 1000.0,
        metrics=metrics,
    )


def guarded_publisher(shared: CircuitBreakingCacheBackend, client: RedisClient) -> Publish:
    """PUBLISH through the breaker: a failure counts against it and raises.

    On a cluster, ``SPUBLISH``: it goes to the shard that owns the channel's slot only, where
    the listeners are subscribed (a classic PUBLISH would be copied to every node).
    """
    if isinstance(client, RedisCluster):
        cluster = client

        async def spublish(channel: str, payload: bytes | str) -> int:
            receivers: int = await shared.require(lambda: cluster.spublish(channel, payload))
            return receivers

        return spublish

    single = client

    async def publish(channel: str, payload: bytes | str) -> int:
        receivers: int = await shared.require(lambda: single.publish(channel, payload))
        return receivers

    return publish


def invalidation_channel(l2: RedisApiKeyCacheBackend) -> str:
    """The deployment's channel: the key prefix and the Redis database number.

    Pub/sub ignores the database number, so two deployments that differ only in ``REDIS_URL``'s
    database would otherwise hear (and acknowledge) each other's invalidations. On a cluster
    (database 0 only) the suffix is a hash tag, ``<prefix>{invalidate}``: the reply channels
    (``<channel>:ack:<id>``) then hash to the same slot, so one sharded session hears both.
    """
    client = l2.client
    suffix = INVALIDATION_CHANNEL_SUFFIX
    if isinstance(client, RedisCluster):
        return f"{l2.key_prefix}{{{suffix}}}"
    database = client.connection_pool.connection_kwargs.get("db", 0)
    return l2.key_prefix + (suffix if not database else f"db{database}:{suffix}")


def tiered_cache(
    shared: CircuitBreakingCacheBackend,
    *,
    l1_ttl_seconds: float = 60,
    l1_max_entries: int = 100_000,
    ack_timeout_ms: int = 500,
    watchdog_interval_seconds: float = 1.0,
) -> TieredApiKeyCacheBackend:
    """A per-process L1 over ``shared`` (a guarded Redis backend), coherent over pub/sub."""
    l2 = shared.inner
    if not isinstance(l2, RedisApiKeyCacheBackend):
        raise TypeError("the tiered cache needs a breaker around a RedisApiKeyCacheBackend")
    l1 = LocalTier(l1_max_entries, l1_ttl_seconds)
    listener = InvalidationListener(
        l2.client,
        invalidation_channel(l2),
        publish=guarded_publisher(shared, l2.client),
        on_invalidate=l1.apply_invalidation,
        on_trusted=l1.mark_trusted,
        on_lost=l1.mark_untrusted,
        watchdog_interval_seconds=watchdog_interval_seconds,
    )
    return TieredApiKeyCacheBackend(shared, l2, l1, listener, ack_timeout_ms=ack_timeout_ms)


def tiered_cache_over(
    client: RedisClient,
    *,
    guard: Callable[[RedisClient], CircuitBreakingCacheBackend],
    l1_ttl_seconds: float = 60,
    l1_max_entries: int = 100_000,
    ack_timeout_ms: int = 500,
) -> TieredApiKeyCacheBackend:
    """``tiered_cache`` over ``guard(client)``: the shape ``shared_cache_or_memory`` calls."""
    return tiered_cache(
        guard(client),
        l1_ttl_seconds=l1_ttl_seconds,
        l1_max_entries=l1_max_entries,
        ack_timeout_ms=ack_timeout_ms,
    )


def shared_cache_or_memory(
    client: RedisClient | None,
    shared: Callable[[RedisClient], CoherentCacheBackend],
    memory: Callable[[], InMemoryApiKeyCacheBackend],
    backend_name: str,
) -> CoherentCacheBackend:
    """The shared backend on ``client``; without a Redis URL, the memory one and a warning.

    A deploy that asks for Redis but forgot its URL keeps authenticating, per process.
    """
    if client is None:
        logger.warning(
            "APIKEY_CACHE_BACKEND=%s but REDIS_URL is not set: using the in-memory cache",
            backend_name,
        )
        return memory()
    return shared(client)


def split_secrets(secrets: str | None) -> tuple[bytes, ...]:
    """``"a,b"`` → ``(b"a", b"b")``; blanks are ignored (an empty setting means none)."""
    if not secrets:
        return ()
    return tuple(part.strip().encode("utf-8") for part in secrets.split(",") if part.strip())


def signed_records_beside(
    cache: CoherentCacheBackend,
    *,
    secret: str | None,
    previous_secrets: str | None = None,
) -> SignedRecordCache | None:
    """The signed record store for a cache that lives in Redis; ``None`` for the memory one.

    Redis-backed caches must have a secret: without one, Redis would be trusted with the
    scopes of every key, which is exactly what this store exists to prevent.
    """
    if isinstance(cache, TieredApiKeyCacheBackend):
        guard = cache.shared
    elif isinstance(cache, CircuitBreakingCacheBackend):
        guard = cache
    else:
        return None
    l2 = guard.inner
    if not isinstance(l2, RedisApiKeyCacheBackend):
        return None
    if not secret:
        raise ValueError("a Redis-backed API-key cache needs APIKEY_CACHE_HMAC_SECRET")
    return SignedRecordCache(
        guard,
        l2.client,
        l2.key_prefix,
        secret=secret.encode("utf-8"),
        previous_secrets=split_secrets(previous_secrets),
    )
