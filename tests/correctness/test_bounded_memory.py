"""Bounded memory: the in-memory backend keeps at most ``max_entries`` and evicts the LRU."""

from __future__ import annotations

from types import SimpleNamespace

from app.domain.keys import digest
from app.services.apikey_cache_backend import InMemoryApiKeyCacheBackend
from app.services.apikey_service import ApiKeyService
from tests.correctness.support import ControlledRepository

BOUND = 100


def _value(n: int) -> SimpleNamespace:
    return SimpleNamespace(apiKey=f"game_{n:08d}", active=True)


async def test_ten_times_the_bound_keeps_the_size_at_the_bound_and_the_recent_entries() -> None:
    cache = InMemoryApiKeyCacheBackend(max_entries=BOUND)
    keys = [f"{n:064x}" for n in range(10 * BOUND)]

    for n, key in enumerate(keys):
        await cache.set(key, _value(n), 60)
        assert len(cache) <= BOUND

    assert len(cache) == BOUND
    for n, key in enumerate(keys[-BOUND:], start=9 * BOUND):
        cached = await cache.get(key)
        assert cached is not None and cached.apiKey == _value(n).apiKey
    assert all(cache.peek(key) is None for key in keys[: 9 * BOUND])


async def test_a_recently_read_entry_survives_while_older_ones_go() -> None:
    cache = InMemoryApiKeyCacheBackend(max_entries=BOUND)
    hot = "f" * 64
    await cache.set(hot, _value(-1), 60)

    for n in range(10 * BOUND):
        await cache.add(f"{n:064x}", _value(n), 60)
        if n % (BOUND // 2) == 0:
            assert await cache.get(hot) is not None  # each read makes it most recent again

    assert len(cache) == BOUND
    assert await cache.get(hot) is not None


async def test_the_service_fills_a_bounded_cache_without_growing_it(
    repository: ControlledRepository,
) -> None:
    cache = InMemoryApiKeyCacheBackend(max_entries=10)
    service = ApiKeyService(cache, repository)
    created = [await service.create(f"key-{n}", ["read"]) for n in range(100)]

    for key in created:
        await service.authenticate(key.plaintext)

    assert len(cache) == 10
    assert all(cache.peek(digest(key.plaintext)) is not None for key in created[-10:])
