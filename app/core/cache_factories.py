"""Factories the container calls where choosing a concrete class needs a runtime fact.

Kept out of ``container.py`` so the container stays declarative.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from redis.asyncio import Redis

from app.services.apikey_cache_backend import InMemoryApiKeyCacheBackend, RedisApiKeyCacheBackend
from app.services.cache_contracts import CoherentCacheBackend
from app.services.circuit_breaker import CircuitBreakingCacheBackend
from app.services.metrics import CacheMetrics
from app.services.tiered_cache_backend import TieredApiKeyCacheBackend

logger = logging.getLogger(__name__)


def shared_cache_or_memory(
    client: Redis | None,
    shared: Callable[[Redis], CoherentCacheBackend],
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


def guarded_redis_backend(
    client: Redis,
    key_prefix: str,
    failure_threshold: int,
    reset_after_seconds: float,
    operation_timeout_ms: int,
    metrics: CacheMetrics,
) -> CircuitBreakingCacheBackend:
    """The Redis backend behind a circuit breaker and a per-call deadline."""
    return CircuitBreakingCacheBackend(
        RedisApiKeyCacheBackend(client, key_prefix=key_prefix),
        failure_threshold=failure_threshold,
        reset_after_seconds=reset_after_seconds,
        operation_timeout_seconds=operation_timeout_ms / 1000.0,
        metrics=metrics,
    )


def guarded_tiered_backend(
    client: Redis,
    key_prefix: str,
    failure_threshold: int,
    reset_after_seconds: float,
    operation_timeout_ms: int,
    metrics: CacheMetrics,
    l1_ttl_seconds: int,
    l1_max_entries: int,
    ack_timeout_ms: int,
) -> TieredApiKeyCacheBackend:
    """A per-process L1 over the guarded Redis backend, kept coherent over pub/sub."""
    return TieredApiKeyCacheBackend(
        guarded_redis_backend(
            client,
            key_prefix=key_prefix,
            failure_threshold=failure_threshold,
            reset_after_seconds=reset_after_seconds,
            operation_timeout_ms=operation_timeout_ms,
            metrics=metrics,
        ),
        l1_ttl_seconds=l1_ttl_seconds,
        l1_max_entries=l1_max_entries,
        ack_timeout_ms=ack_timeout_ms,
    )
