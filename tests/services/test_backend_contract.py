"""One contract, every backend: a behaviour difference is either documented or a bug."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from app.services.cache_protocol import CoherentCacheBackend
from tests.services.backends import BACKEND_FACTORIES, BackendContext, backend_params


@pytest.fixture(params=backend_params())
def backend(request: pytest.FixtureRequest, key_prefix: str) -> CoherentCacheBackend:
    factory = BACKEND_FACTORIES[request.param]
    return factory(BackendContext(request=request, key_prefix=key_prefix))


def value(prefix: str = "game_AbCd1234", active: bool = True) -> SimpleNamespace:
    return SimpleNamespace(apiKey=prefix, active=active)


async def test_get_of_an_absent_key_is_none(backend: CoherentCacheBackend) -> None:
    assert await backend.get("0" * 64) is None


async def test_set_then_get_returns_the_value_as_a_namespace(
    backend: CoherentCacheBackend,
) -> None:
    await backend.set("a" * 64, value("game_AAAAaaaa", True), 60)
    await backend.set("b" * 64, value("game_BBBBbbbb", False), 60)

    first = await backend.get("a" * 64)
    second = await backend.get("b" * 64)

    assert isinstance(first, SimpleNamespace)
    assert vars(first) == {"apiKey": "game_AAAAaaaa", "active": True}
    assert vars(second) == {"apiKey": "game_BBBBbbbb", "active": False}


async def test_set_overwrites(backend: CoherentCacheBackend) -> None:
    await backend.set("c" * 64, value(active=True), 60)
    await backend.set("c" * 64, value(active=False), 60)
    cached = await backend.get("c" * 64)
    assert cached is not None and cached.active is False


@pytest.mark.parametrize("ttl", [0, -1, -60])
async def test_set_with_non_positive_ttl_is_a_no_op(
    backend: CoherentCacheBackend, ttl: int
) -> None:
    await backend.set("d" * 64, value(), ttl)
    assert await backend.get("d" * 64) is None


async def test_entry_expires_after_its_ttl(backend: CoherentCacheBackend) -> None:
    await backend.set("e" * 64, value(), 1)
    assert await backend.get("e" * 64) is not None
    deadline = time.monotonic() + 5
    while await backend.get("e" * 64) is not None:
        assert time.monotonic() < deadline, "entry outlived its 1 s TTL by 4 s"
        await asyncio.sleep(0.05)


async def test_delete_removes_only_that_key(backend: CoherentCacheBackend) -> None:
    await backend.set("f" * 64, value(), 60)
    await backend.set("1" * 64, value(), 60)
    await backend.delete("f" * 64)
    await backend.delete("9" * 64)  # absent: no error
    assert await backend.get("f" * 64) is None
    assert await backend.get("1" * 64) is not None


async def test_clear_removes_every_entry(backend: CoherentCacheBackend) -> None:
    keys = [f"{index:064x}" for index in range(2_500)]
    for key in keys:
        await backend.set(key, value(), 60)
    await backend.clear()
    for key in [*keys[::97], keys[-1]]:
        assert await backend.get(key) is None
    await backend.set(keys[0], value(), 60)
    assert await backend.get(keys[0]) is not None, "the backend must work after clear()"


async def test_add_stores_only_when_absent(backend: CoherentCacheBackend) -> None:
    assert await backend.add("2" * 64, value(active=False), 60) is True
    assert await backend.add("2" * 64, value(active=True), 60) is False
    cached = await backend.get("2" * 64)
    assert cached is not None and cached.active is False
    assert await backend.add("3" * 64, value(), 0) is False
    assert await backend.get("3" * 64) is None


async def test_invalidate_replaces_the_entry(backend: CoherentCacheBackend) -> None:
    await backend.set("4" * 64, value(active=True), 60)
    report = await backend.invalidate("4" * 64, value(active=False), 60)
    cached = await backend.get("4" * 64)
    assert cached is not None and cached.active is False
    assert report.confirmed is True
    assert await backend.add("4" * 64, value(active=True), 60) is False


async def test_invalidate_without_replacement_removes_the_entry(
    backend: CoherentCacheBackend,
) -> None:
    await backend.set("5" * 64, value(), 60)
    report = await backend.invalidate("5" * 64, None, 60)
    assert await backend.get("5" * 64) is None
    assert report.confirmed is True


async def test_a_returned_value_is_a_copy(backend: CoherentCacheBackend) -> None:
    stored = value(active=True)
    await backend.set("6" * 64, stored, 60)
    stored.active = False
    first = await backend.get("6" * 64)
    assert first is not None and first.active is True
    first.active = False
    second = await backend.get("6" * 64)
    assert second is not None and second.active is True
