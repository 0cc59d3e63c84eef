"""The pluggable cache in front of API-key lookup: the documented face of the cache modules.

Every backend caches the resolved ``(apiKey, active)`` value of a key, keyed by the sha256 hex
digest of the key's plaintext, so no backend ever holds key material.

* ``ApiKeyCacheBackend`` — the protocol (``app.services.cache_protocol``).
* ``InMemoryApiKeyCacheBackend`` — a per-process dict (``app.services.memory_cache_backend``).
* ``RedisApiKeyCacheBackend`` — one keyspace shared by every worker and host
  (``app.services.redis_cache_backend``).
* ``build_apikey_cache_backend`` — picks one by name with the same recipes the container uses
  (``app.services.cache_factories``), falling back to memory (with a warning) when Redis is
  asked for without a URL, so a misconfigured deploy still authenticates.

This module only gathers those names: nothing in ``app.services`` imports it, so it can name
every backend without sitting in the middle of an import circle.
"""

from __future__ import annotations

from functools import partial

from app.clients.redis_client import RedisClient, build_optional_redis_client
from app.services.cache_factories import (
    BACKEND_NAMES,
    memory_cache,
    redis_cache,
    shared_cache_or_memory,
    tiered_cache_over,
)
from app.services.cache_protocol import ApiKeyCacheBackend, CoherentCacheBackend
from app.services.guarded_cache_backend import CircuitBreakingCacheBackend
from app.services.memory_cache_backend import InMemoryApiKeyCacheBackend
from app.services.metrics import CacheMetrics
from app.services.redis_cache_backend import DEFAULT_KEY_PREFIX, RedisApiKeyCacheBackend

__all__ = [
    "DEFAULT_KEY_PREFIX",
    "ApiKeyCacheBackend",
    "InMemoryApiKeyCacheBackend",
    "RedisApiKeyCacheBackend",
    "build_apikey_cache_backend",
]


def build_apikey_cache_backend(
    backend_name: str, redis_url: str | None, redis_key_prefix: str = DEFAULT_KEY_PREFIX
) -> ApiKeyCacheBackend:
    """Pick a backend by name; ``"redis"`` or ``"tiered"`` without a URL falls back to memory
    with a warning. The Redis client gets the same explicit timeouts, retry and bounded pool
    as the service's.
    """
    if backend_name not in BACKEND_NAMES:
        raise ValueError(
            f"unknown API-key cache backend {backend_name!r}: "
            "expected 'memory', 'redis' or 'tiered'"
        )
    if backend_name == "memory":
        return memory_cache()
    metrics = CacheMetrics()

    def guard(client: RedisClient) -> CircuitBreakingCacheBackend:
        return redis_cache(client, key_prefix=redis_key_prefix, metrics=metrics)

    def shared(client: RedisClient) -> CoherentCacheBackend:
        return guard(client) if backend_name == "redis" else tiered_cache_over(client, guard=guard)

    return shared_cache_or_memory(
        build_optional_redis_client(redis_url), shared, partial(memory_cache), backend_name
    )
