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
