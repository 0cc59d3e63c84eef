"""Single-flight: concurrent misses for one key share one repository lookup per process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import fakeredis
import pytest

from app.services.apikey_cache_backend import InMemoryApiKeyCacheBackend, RedisApiKeyCacheBackend
from app.services.apikey_service import ApiKeyService, AuthenticatedKey
from app.services.single_flight import SingleFlight
from tests.correctness.support import ControlledRepository, CountingCache, wait_until

CONCURRENT_REQUESTS = 500


@pytest.fixture(params=["memory", "fakeredis"])
async def cache(
    request: pytest.FixtureRequest, fake_server: fakeredis.FakeServer, key_prefix: str
) -> AsyncIterator[CountingCache]:
    if request.param == "memory":
        yield CountingCache(InMemoryApiKeyCacheBackend())
        return
    # A pool as wide as the flood: every request reads the cache before joining the flight.
    client = fakeredis.FakeAsyncRedis(server=fake_server, max_connections=CONCURRENT_REQUESTS + 10)
    try:
        yield CountingCache(RedisApiKeyCacheBackend(client, key_prefix))
    finally:
        await client.aclose()


async def _start_held_flood(
    service: ApiKeyService, repository: ControlledRepository, cache: CountingCache, plaintext: str
) -> list[asyncio.Task[AuthenticatedKey]]:
    """Fire the requests while the one lookup is held, and wait until every one has missed."""
    repository.pause_digest_reads()
    tasks = [
        asyncio.create_task(service.authenticate(plaintext)) for _ in range(CONCURRENT_REQUESTS)
    ]
    await asyncio.wait_for(repository.read_done.wait(), timeout=10)
    await wait_until(lambda: cache.calls["get"] >= CONCURRENT_REQUESTS)
    return tasks


async def test_500_concurrent_misses_make_one_repository_lookup(
    cache: CountingCache, repository: ControlledRepository
) -> None:
    service = ApiKeyService(cache, repository)
    created = await service.create("flood", ["read"])

    tasks = await _start_held_flood(service, repository, cache, created.plaintext)
    repository.release()
    results = await asyncio.gather(*tasks)

    assert repository.digest_lookups == 1
    assert service.metrics.repository_lookups == 1
    assert {result.prefix for result in results} == {created.record.prefix}
    assert cache.calls["add"] == 1


async def test_cancelling_waiters_does_not_cancel_the_shared_lookup(
    cache: CountingCache, repository: ControlledRepository
) -> None:
    service = ApiKeyService(cache, repository)
    created = await service.create("flood", ["read"])

    tasks = await _start_held_flood(service, repository, cache, created.plaintext)
    # The first request started the lookup; a client hanging up must not abort it for others.
    cancelled = [tasks[0], tasks[250], tasks[-1]]
    for task in cancelled:
        task.cancel()
    await asyncio.wait(cancelled, timeout=10)
    repository.release()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)

    assert all(task.cancelled() for task in cancelled)
    admitted = [outcome for outcome in outcomes if isinstance(outcome, AuthenticatedKey)]
    assert len(admitted) == CONCURRENT_REQUESTS - len(cancelled)
    assert repository.digest_lookups == 1
    # The lookup finished and filled the cache: the next request is a hit.
    lookups = repository.digest_lookups
    await service.authenticate(created.plaintext)
    assert repository.digest_lookups == lookups


async def test_control_waiters_awaiting_the_load_directly_are_cancelled_together() -> None:
    """Why ``SingleFlight`` shields: without it one cancelled waiter aborts the shared load."""
    release = asyncio.Event()
    waiting: list[str] = []

    async def load() -> str:
        await release.wait()
        return "loaded"

    async def wait_directly(shared: asyncio.Future[str]) -> str:
        waiting.append("direct")
        return await shared

    shared = asyncio.ensure_future(load())
    first = asyncio.create_task(wait_directly(shared))
    second = asyncio.create_task(wait_directly(shared))
    await wait_until(lambda: len(waiting) == 2)
    first.cancel()
    outcomes = await asyncio.gather(first, second, return_exceptions=True)
    assert all(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes)

    flights: SingleFlight[str, str] = SingleFlight()

    async def wait_in_flight() -> str:
        waiting.append("shielded")
        return await flights.run("k", load)

    waiting.clear()
    first = asyncio.create_task(wait_in_flight())
    second = asyncio.create_task(wait_in_flight())
    await wait_until(lambda: len(waiting) == 2 and len(flights) == 1)
    first.cancel()
    await asyncio.wait({first}, timeout=10)
    release.set()
    assert await second == "loaded"
    assert first.cancelled()
