"""The container hands the cache bound and the negative-cache settings to their users."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dependency_injector import providers

from app.core.container import Container, build_container
from app.domain.errors import InvalidApiKey
from app.domain.keys import generate_api_key
from app.repositories.memory import InMemoryApiKeyRepository, InMemoryEventLog
from app.services.apikey_cache_backend import InMemoryApiKeyCacheBackend
from configs import Settings
from tests.correctness.support import ControlledRepository


@pytest.fixture
def containers() -> Iterator[list[Container]]:
    built: list[Container] = []
    yield built
    for container in built:
        container.reset_singletons()
        container.reset_override()


def _container(containers: list[Container], settings: Settings) -> Container:
    container = build_container(settings)
    containers.append(container)
    return container


async def test_apikey_cache_max_entries_bounds_the_memory_backend(
    containers: list[Container],
) -> None:
    container = _container(containers, Settings(APIKEY_CACHE_MAX_ENTRIES=7))
    repository = InMemoryApiKeyRepository()
    container.apikey_repository.override(providers.Object(repository))
    container.event_log.override(providers.Object(InMemoryEventLog(repository)))
    cache = container.apikey_cache()
    assert isinstance(cache, InMemoryApiKeyCacheBackend)
    service = container.apikey_service()

    for n in range(30):
        created = await service.create(f"key-{n}", ["read"])
        await service.authenticate(created.plaintext)

    assert len(cache) == 7


@pytest.mark.parametrize(("negative_ttl", "expected_lookups"), [(5, 1), (0, 3)])
async def test_the_negative_ttl_setting_reaches_the_service(
    containers: list[Container], negative_ttl: int, expected_lookups: int
) -> None:
    container = _container(containers, Settings(APIKEY_NEGATIVE_TTL_SECONDS=negative_ttl))
    repository = ControlledRepository(InMemoryApiKeyRepository())
    container.apikey_repository.override(providers.Object(repository))
    container.event_log.override(providers.Object(InMemoryEventLog(repository)))
    service = container.apikey_service()
    unknown = generate_api_key().plaintext

    for _ in range(3):
        with pytest.raises(InvalidApiKey):
            await service.authenticate(unknown)

    assert repository.digest_lookups == expected_lookups


async def test_the_negative_max_entries_setting_bounds_the_negative_cache(
    containers: list[Container],
) -> None:
    container = _container(containers, Settings(APIKEY_NEGATIVE_MAX_ENTRIES=2))
    repository = ControlledRepository(InMemoryApiKeyRepository())
    container.apikey_repository.override(providers.Object(repository))
    container.event_log.override(providers.Object(InMemoryEventLog(repository)))
    service = container.apikey_service()
    probes = [generate_api_key().plaintext for _ in range(3)]

    for plaintext in [*probes, probes[-1], probes[0]]:
        with pytest.raises(InvalidApiKey):
            await service.authenticate(plaintext)

    # The newest probe is still remembered; the oldest was evicted and looked up again.
    assert repository.digest_lookups == 4
