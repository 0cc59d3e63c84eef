"""The negative cache: unknown keys are remembered briefly, apart from the real entries."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from app.domain.errors import InvalidApiKey
from app.domain.keys import ParsedApiKey, digest, generate_api_key
from app.services import bounded_ttl_map
from app.services.apikey_cache_backend import InMemoryApiKeyCacheBackend
from app.services.apikey_service import ApiKeyService
from tests.correctness.support import ControlledRepository

REAL_KEYS = 20
UNKNOWN_KEYS = 500


class KnownKeys:
    """A ``key_generator`` that hands out keys chosen in advance, so a test can probe them first."""

    def __init__(self) -> None:
        self.upcoming: list[ParsedApiKey] = []

    def next_key(self) -> ParsedApiKey:
        return generate_api_key() if not self.upcoming else self.upcoming.pop(0)

    def reserve(self) -> ParsedApiKey:
        key = generate_api_key()
        self.upcoming.append(key)
        return key


async def test_a_flood_of_unknown_keys_reaches_the_repository_once_per_key(
    repository: ControlledRepository,
) -> None:
    cache = InMemoryApiKeyCacheBackend(max_entries=REAL_KEYS)
    service = ApiKeyService(cache, repository, negative_max_entries=UNKNOWN_KEYS)
    real = [await service.create(f"real-{n}", ["read"]) for n in range(REAL_KEYS)]
    for key in real:
        await service.authenticate(key.plaintext)
    unknown = [generate_api_key().plaintext for _ in range(UNKNOWN_KEYS)]
    lookups_before = repository.digest_lookups

    for _round in range(3):
        for plaintext in unknown:
            with pytest.raises(InvalidApiKey):
                await service.authenticate(plaintext)

    assert repository.digest_lookups - lookups_before == UNKNOWN_KEYS
    assert service.metrics.negative_hits == 2 * UNKNOWN_KEYS
    # The bounded positive cache still holds every real key: the flood evicted none of them.
    assert len(cache) == REAL_KEYS
    assert all(cache.peek(digest(key.plaintext)) is not None for key in real)
    lookups_before = repository.digest_lookups
    for key in real:
        await service.authenticate(key.plaintext)
    assert repository.digest_lookups == lookups_before


async def test_an_unknown_key_is_looked_up_again_once_its_ttl_has_passed(
    repository: ControlledRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    monkeypatch.setattr(bounded_ttl_map, "_monotonic", lambda: now[0])
    service = ApiKeyService(InMemoryApiKeyCacheBackend(), repository, negative_ttl_seconds=5)
    plaintext = generate_api_key().plaintext

    for _ in range(3):
        with pytest.raises(InvalidApiKey):
            await service.authenticate(plaintext)
    assert repository.digest_lookups == 1

    now[0] += 5.0
    with pytest.raises(InvalidApiKey):
        await service.authenticate(plaintext)
    assert repository.digest_lookups == 2


async def test_a_zero_negative_ttl_disables_the_negative_cache(
    repository: ControlledRepository,
) -> None:
    service = ApiKeyService(InMemoryApiKeyCacheBackend(), repository, negative_ttl_seconds=0)
    plaintext = generate_api_key().plaintext
    for _ in range(3):
        with pytest.raises(InvalidApiKey):
            await service.authenticate(plaintext)
    assert repository.digest_lookups == 3


@pytest.fixture
def known_keys() -> KnownKeys:
    return KnownKeys()


@pytest.fixture
def make_service(
    repository: ControlledRepository, known_keys: KnownKeys
) -> Callable[[], ApiKeyService]:
    return lambda: ApiKeyService(
        InMemoryApiKeyCacheBackend(), repository, key_generator=known_keys.next_key
    )


async def test_a_key_created_after_being_probed_works_at_once(
    make_service: Callable[[], ApiKeyService], known_keys: KnownKeys
) -> None:
    service = make_service()
    future_key = known_keys.reserve()
    with pytest.raises(InvalidApiKey):
        await service.authenticate(future_key.plaintext)

    created = await service.create("late", ["read"])

    assert created.plaintext == future_key.plaintext
    admitted = await service.authenticate(future_key.plaintext)
    assert admitted.prefix == future_key.prefix


async def test_a_probe_in_flight_while_the_key_is_created_does_not_lock_it_out(
    make_service: Callable[[], ApiKeyService],
    known_keys: KnownKeys,
    repository: ControlledRepository,
) -> None:
    """The probe read "unknown" before the create; it must not record that after the create."""
    service = make_service()
    future_key = known_keys.reserve()
    repository.pause_digest_reads()
    probe = asyncio.create_task(service.authenticate(future_key.plaintext))
    await asyncio.wait_for(repository.read_done.wait(), timeout=10)

    await service.create("late", ["read"])
    repository.release()
    await asyncio.wait({probe}, timeout=10)

    assert isinstance(probe.exception(), InvalidApiKey)
    admitted = await service.authenticate(future_key.plaintext)
    assert admitted.prefix == future_key.prefix


async def test_a_request_after_create_does_not_join_a_probe_still_in_flight(
    make_service: Callable[[], ApiKeyService],
    known_keys: KnownKeys,
    repository: ControlledRepository,
) -> None:
    service = make_service()
    future_key = known_keys.reserve()
    repository.pause_digest_reads()
    probe = asyncio.create_task(service.authenticate(future_key.plaintext))
    await asyncio.wait_for(repository.read_done.wait(), timeout=10)
    await service.create("late", ["read"])

    # The probe is still held with its stale "unknown"; a request made now must not share it.
    after_create = asyncio.create_task(service.authenticate(future_key.plaintext))
    repository.release()
    await asyncio.wait({probe, after_create}, timeout=10)

    assert isinstance(probe.exception(), InvalidApiKey)
    assert after_create.result().prefix == future_key.prefix
