"""``build_apikey_cache_backend``: selection by name and the documented fallback."""

from __future__ import annotations

import logging

import pytest

from app.services.apikey_cache_backend import (
    InMemoryApiKeyCacheBackend,
    RedisApiKeyCacheBackend,
    build_apikey_cache_backend,
)
from app.services.guarded_cache_backend import CircuitBreakingCacheBackend


def test_memory_by_name() -> None:
    assert isinstance(build_apikey_cache_backend("memory", None), InMemoryApiKeyCacheBackend)


async def test_redis_with_url_uses_that_url_and_prefix() -> None:
    backend = build_apikey_cache_backend("redis", "redis://127.0.0.1:6390/3", "custom:")
    # The same guarded backend the service runs on: the breaker around the shared keyspace.
    assert isinstance(backend, CircuitBreakingCacheBackend)
    shared = backend.inner
    assert isinstance(shared, RedisApiKeyCacheBackend)
    assert shared.key_prefix == "custom:"
    kwargs = shared.client.connection_pool.connection_kwargs
    assert (kwargs["port"], kwargs["db"]) == (6390, 3)
    assert kwargs["socket_timeout"] is not None and kwargs["socket_timeout"] <= 1
    await shared.client.aclose()


@pytest.mark.parametrize("url", [None, ""])
def test_redis_without_url_falls_back_to_memory_with_a_warning(
    caplog: pytest.LogCaptureFixture, url: str | None
) -> None:
    with caplog.at_level(logging.WARNING):
        backend = build_apikey_cache_backend("redis", url, "game:apikey:")

    assert isinstance(backend, InMemoryApiKeyCacheBackend)
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "REDIS_URL" in warnings[0].getMessage()


def test_unknown_name_is_a_clear_value_error() -> None:
    with pytest.raises(ValueError, match="unknown API-key cache backend 'memcached'"):
        build_apikey_cache_backend("memcached", None, "game:apikey:")
