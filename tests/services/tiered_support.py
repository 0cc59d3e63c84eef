"""Building tiered backends in tests, each stopped cleanly when its test ends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import pytest

from app.clients.redis_client import RedisClient
from app.services.apikey_cache_backend import RedisApiKeyCacheBackend
from app.services.cache_factories import guard_cache, tiered_cache
from app.services.tiered_cache_backend import TieredApiKeyCacheBackend

READY_TIMEOUT_SECONDS = 10.0


class TieredFactory(Protocol):
    def __call__(
        self, client: RedisClient, key_prefix: str, **options: Any
    ) -> TieredApiKeyCacheBackend: ...


def build_tiered(client: RedisClient, key_prefix: str, **options: Any) -> TieredApiKeyCacheBackend:
    """A tiered backend on ``client``; breaker options go to the breaker, the rest to tiered."""
    breaker_options = {
        name: options.pop(name)
        for name in ("failure_threshold", "reset_after_seconds", "operation_timeout_seconds")
        if name in options
    }
    options.setdefault("watchdog_interval_seconds", 0.25)
    shared = guard_cache(RedisApiKeyCacheBackend(client, key_prefix=key_prefix), **breaker_options)
    return tiered_cache(shared, **options)


@pytest.fixture
async def tiered_factory() -> AsyncIterator[TieredFactory]:
    """Make tiered backends; every one is closed (listener stopped) at teardown."""
    made: list[TieredApiKeyCacheBackend] = []

    def make(client: RedisClient, key_prefix: str, **options: Any) -> TieredApiKeyCacheBackend:
        backend = build_tiered(client, key_prefix, **options)
        made.append(backend)
        return backend

    try:
        yield make
    finally:
        for backend in made:
            await backend.aclose()


async def eventually(
    condition: Callable[[], bool], what: str, within_seconds: float = READY_TIMEOUT_SECONDS
) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``within_seconds``."""
    deadline = time.monotonic() + within_seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.01)


async def ready(*backends: TieredApiKeyCacheBackend) -> None:
    for backend in backends:
        assert await backend.wait_ready(READY_TIMEOUT_SECONDS), "listener never subscribed"
