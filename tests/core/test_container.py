"""The container: the Selector picks the backend from settings, overrides work, fallback holds."""

from __future__ import annotations

import logging

import fakeredis
import pytest
from redis.asyncio import Redis

from app.core.container import Container
from app.domain.keys import digest
from app.repositories.memory import InMemoryApiKeyRepository
from app.services.apikey_cache_backend import InMemoryApiKeyCacheBackend, RedisApiKeyCacheBackend
from app.services.apikey_service import ApiKeyService
from app.services.guarded_cache_backend import CircuitBreakingCacheBackend
from configs import CONFIG_DIR
from tests.support.containers import make_container


def make(containers: list[Container], config_file: str | None = None) -> Container:
    return make_container(containers, config_file)


def redis_backend_of(container: Container) -> RedisApiKeyCacheBackend:
    cache = container.apikey_cache()
    assert isinstance(cache, CircuitBreakingCacheBackend)
    inner = cache.inner
    assert isinstance(inner, RedisApiKeyCacheBackend)
    return inner


def test_default_settings_select_memory(containers: list[Container]) -> None:
    container = make(containers)
    assert isinstance(container.apikey_cache(), InMemoryApiKeyCacheBackend)
    assert container.apikey_service().cache is container.apikey_cache()


def test_redis_config_file_selects_redis_with_the_configured_client(
    containers: list[Container],
) -> None:
    container = make(containers, "redis.env")
    backend = redis_backend_of(container)
    assert backend.key_prefix == "game:apikey:"
    assert backend.client is container.redis_client()
    kwargs = backend.client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] is not None and kwargs["socket_timeout"] <= 1
    assert kwargs["socket_connect_timeout"] is not None and kwargs["socket_connect_timeout"] <= 1


def test_switching_the_config_file_switches_the_backend(
    containers: list[Container], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GAME_API_CONFIG", str(CONFIG_DIR / "redis.env"))
    on_redis = make(containers)
    monkeypatch.setenv("GAME_API_CONFIG", str(CONFIG_DIR / "memory.env"))
    on_memory = make(containers)

    assert isinstance(on_redis.apikey_cache(), CircuitBreakingCacheBackend)
    assert isinstance(on_memory.apikey_cache(), InMemoryApiKeyCacheBackend)


def test_config_override_switches_the_selector(containers: list[Container]) -> None:
    container = make(containers, "redis.env")
    with container.config.override({**container.config(), "APIKEY_CACHE_BACKEND": "memory"}):
        assert isinstance(container.apikey_cache(), InMemoryApiKeyCacheBackend)
    assert isinstance(container.apikey_cache(), CircuitBreakingCacheBackend)


def test_redis_without_url_falls_back_to_memory_with_a_warning(
    containers: list[Container], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("REDIS_URL", "")
    container = make(containers, "redis.env")

    with caplog.at_level(logging.WARNING):
        cache = container.apikey_cache()

    assert isinstance(cache, InMemoryApiKeyCacheBackend)
    assert any("REDIS_URL is not set" in record.getMessage() for record in caplog.records)


async def test_overriding_the_redis_client_reaches_the_real_service(
    containers: list[Container],
) -> None:
    container = make(containers, "redis.env")
    server = fakeredis.FakeServer()
    fake = fakeredis.FakeAsyncRedis(server=server)
    container.redis_client.override(fake)

    service = container.apikey_service()
    created = await service.create("game-server", ["read"])
    await service.authenticate(created.plaintext)

    raw = await fake.get("game:apikey:" + digest(created.plaintext))
    assert raw == b'{"apiKey":"' + created.record.prefix.encode() + b'","active":true}'
    await fake.aclose()


async def test_override_providers_replaces_the_repository(containers: list[Container]) -> None:
    container = make(containers)
    repository = InMemoryApiKeyRepository()
    with container.override_providers(apikey_repository=repository):
        service = container.apikey_service()
        created = await service.create("studio-tool", ["admin"])
    assert isinstance(service, ApiKeyService)
    assert await repository.get_by_prefix(created.record.prefix) is not None


async def test_real_redis_through_the_container(
    containers: list[Container], redis_url: str, key_prefix: str, real_redis: Redis
) -> None:
    container = make(containers, "redis.env")
    settings = {**container.config(), "REDIS_URL": redis_url}
    with container.config.override({**settings, "APIKEY_CACHE_REDIS_KEY_PREFIX": key_prefix}):
        service = container.apikey_service()
        created = await service.create("game-server", ["read"])
        await service.authenticate(created.plaintext)
        await container.redis_client().aclose()
    assert await real_redis.exists(key_prefix + digest(created.plaintext)) == 1


@pytest.mark.parametrize(
    ("topology", "address_setting", "address", "lossy"),
    [
        ("single", "REDIS_URL", "redis://127.0.0.1:6390/0", False),
        ("sentinel", "REDIS_SENTINELS", "127.0.0.1:26390", True),
        ("cluster", "REDIS_CLUSTER_NODES", "127.0.0.1:7390", True),
    ],
)
def test_replicated_topologies_tell_revoke_that_a_tombstone_can_be_lost(
    containers: list[Container],
    monkeypatch: pytest.MonkeyPatch,
    topology: str,
    address_setting: str,
    address: str,
    lossy: bool,
) -> None:
    monkeypatch.setenv("APIKEY_CACHE_BACKEND", "redis")
    monkeypatch.setenv("REDIS_TOPOLOGY", topology)
    monkeypatch.setenv(address_setting, address)
    container = make(containers)
    assert container.shared_writes_can_be_lost() is lossy
