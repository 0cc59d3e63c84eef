"""In-memory backend specifics: lazy eviction on the monotonic clock, and loop-safe locking."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from app.services import bounded_ttl_map
from app.services.apikey_cache_backend import InMemoryApiKeyCacheBackend


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeMonotonic:
    fake = FakeMonotonic()
    monkeypatch.setattr(bounded_ttl_map, "_monotonic", fake)
    return fake


async def test_expiry_follows_the_monotonic_clock(clock: FakeMonotonic) -> None:
    backend = InMemoryApiKeyCacheBackend()
    await backend.set("k", SimpleNamespace(apiKey="game_A", active=True), 10)

    clock.now += 9.999
    assert await backend.get("k") is not None
    clock.now += 0.001
    assert await backend.get("k") is None


async def test_expired_entry_is_removed_lazily_by_get(clock: FakeMonotonic) -> None:
    backend = InMemoryApiKeyCacheBackend()
    await backend.set("old", SimpleNamespace(apiKey="game_A", active=True), 1)
    await backend.set("new", SimpleNamespace(apiKey="game_B", active=True), 100)
    clock.now += 5

    assert len(backend) == 2, "nothing is evicted until a get finds the entry"
    assert await backend.get("old") is None
    assert len(backend) == 1


async def test_sync_clear_empties_the_store_and_drops_the_lock() -> None:
    backend = InMemoryApiKeyCacheBackend()
    await backend.set("k", SimpleNamespace(apiKey="game_A", active=True), 60)
    assert backend._lock is not None

    backend.sync_clear()

    assert len(backend) == 0
    assert backend._lock is None


async def test_clear_is_the_async_form_of_sync_clear() -> None:
    backend = InMemoryApiKeyCacheBackend()
    await backend.set("k", SimpleNamespace(apiKey="game_A", active=True), 60)
    await backend.clear()
    assert await backend.get("k") is None
    assert backend._lock is None


def test_one_instance_survives_two_event_loops_with_contention() -> None:
    """A lock bound to the first loop would raise "attached to a different loop" in the second."""
    backend = InMemoryApiKeyCacheBackend()

    async def contend(tag: str) -> list[bool]:
        lock = backend._get_lock()
        await lock.acquire()  # hold the lock so every writer below must wait on it
        writers = [
            asyncio.ensure_future(
                backend.set(f"{tag}{index}", SimpleNamespace(apiKey="game_A", active=True), 60)
            )
            for index in range(50)
        ]
        adders = [
            asyncio.ensure_future(
                backend.add(f"{tag}{index}", SimpleNamespace(apiKey="game_B", active=False), 60)
            )
            for index in range(50)
        ]
        await asyncio.sleep(0)
        assert not any(task.done() for task in writers), "writers must be waiting on the lock"
        lock.release()
        await asyncio.gather(*writers)
        return list(await asyncio.gather(*adders))

    first = asyncio.run(contend("first-"))
    second = asyncio.run(contend("second-"))

    assert first == [False] * 50 and second == [False] * 50
    assert len(backend) == 100


def test_max_entries_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        InMemoryApiKeyCacheBackend(max_entries=0)


async def test_peek_item_hands_the_request_path_the_stored_expiry(clock: FakeMonotonic) -> None:
    """The request path reads the clock once and judges the item's expiry itself: the item
    carries the instant ``get`` would judge by, and reading it removes nothing."""
    backend = InMemoryApiKeyCacheBackend()
    await backend.set("k", SimpleNamespace(apiKey="game_A", active=True), 10)

    stored = backend.peek_item("k")
    assert stored is not None
    expires_at, value = stored
    assert expires_at == clock.now + 10
    assert vars(value) == {"apiKey": "game_A", "active": True}
    clock.now = expires_at
    assert backend.peek_item("k") == stored, "left for the caller to judge"
    assert await backend.get("k") is None, "expired at that instant for get too"
    assert backend.peek_item("k") is None, "and get removed it"
    assert backend.peek_item("absent") is None
