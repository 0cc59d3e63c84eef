"""``tiered`` is selectable: by the container's Selector, by name, and by its config file."""

from __future__ import annotations

import logging

import pytest

from app.core.container import Container
from app.services.apikey_cache_backend import (
    InMemoryApiKeyCacheBackend,
    RedisApiKeyCacheBackend,
    build_apikey_cache_backend,
)
from app.services.tiered_cache_backend import TieredApiKeyCacheBackend
from tests.support.containers import make_container


def make(containers: list[Container]) -> Container:
    return make_container(containers, "tiered.env")


async def test_the_tiered_config_file_selects_the_tiered_backend_with_its_settings(
    containers: list[Container],
) -> None:
    container = make(containers)
    cache = container.apikey_cache()

    assert isinstance(cache, TieredApiKeyCacheBackend)
    assert container.apikey_service().cache is cache
    assert cache.listener.channel == "game:apikey:invalidate"
    assert container.apikey_cache() is cache, "one tiered backend (one listener) per process"
    await cache.aclose()


async def test_settings_reach_the_tiered_backend(
    containers: list[Container], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APIKEY_CACHE_REDIS_KEY_PREFIX", "other:")
    monkeypatch.setenv("APIKEY_CACHE_L1_MAX_ENTRIES", "7")
    container = make(containers)
    cache = container.apikey_cache()

    assert isinstance(cache, TieredApiKeyCacheBackend)
    assert cache.listener.channel == "other:invalidate"
    assert (cache.l1_ttl_seconds, cache.l1_max_entries, cache.ack_timeout_seconds) == (60, 7, 0.5)


def test_tiered_without_a_redis_url_falls_back_to_memory_with_a_warning(
    containers: list[Container],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("REDIS_URL", "")
    with caplog.at_level(logging.WARNING):
        cache = make(containers).apikey_cache()

    assert isinstance(cache, InMemoryApiKeyCacheBackend)
    assert any(
        "APIKEY_CACHE_BACKEND=tiered" in record.getMessage() and "REDIS_URL" in record.getMessage()
        for record in caplog.records
    )


async def test_build_apikey_cache_backend_accepts_tiered() -> None:
    backend = build_apikey_cache_backend("tiered", "redis://127.0.0.1:6390/3", "custom:")

    assert isinstance(backend, TieredApiKeyCacheBackend)
    assert backend.listener.channel == "custom:db3:invalidate"  # the database is in it
    await backend.aclose()


def test_build_apikey_cache_backend_tiered_without_url_is_memory(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        backend = build_apikey_cache_backend("tiered", None)
    assert isinstance(backend, InMemoryApiKeyCacheBackend)
    assert not isinstance(backend, RedisApiKeyCacheBackend)
    assert any("REDIS_URL" in record.getMessage() for record in caplog.records)


async def test_deployments_on_different_redis_databases_do_not_share_a_channel() -> None:
    """Pub/sub ignores the database number: the channel must carry it."""
    on_db0 = build_apikey_cache_backend("tiered", "redis://127.0.0.1:6390/0", "game:apikey:")
    on_db3 = build_apikey_cache_backend("tiered", "redis://127.0.0.1:6390/3", "game:apikey:")
    try:
        assert isinstance(on_db0, TieredApiKeyCacheBackend)
        assert isinstance(on_db3, TieredApiKeyCacheBackend)
        assert on_db0.listener.channel == "game:apikey:invalidate"
        assert on_db3.listener.channel == "game:apikey:db3:invalidate"
    finally:
        for backend in (on_db0, on_db3):
            assert isinstance(backend, TieredApiKeyCacheBackend)
            await backend.aclose()
            await backend.shared.inner.client.aclose()  # type: ignore[attr-defined]
