"""``build_apikey_cache_backend``: selection by name and the documented fallback."""

from __future__ import annotations

import logging

import pytest

from app.services.apikey_cache_backend import (
    InMemoryApiKeyCacheBackend,
    RedisApiKeyCacheBackend,
    build_apikey_cache_backend,
)


def test_memory_by_name() -> None:
    assert isinstance(build_apikey_cache_backend("memory", None), InMemoryApiKeyCacheBackend)


async def test_redis_with_url_uses_that_url_and_prefix() -> None:
    backend = build_apikey_cache_backend("redis", "redis://127.0.0.1:6390/3", "custom:")
    assert isinstance(backend, RedisApiKeyCacheBackend)
    assert backend.key_prefix == "custom:"
    kwargs = backend.client.connection_pool.connection_kwargs
    assert (kwargs["port"], kwargs["db"]) == (6390, 3)
    await backend.client.aclose()


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
