"""The listener's health rules, on fakeredis: flush on every (re)subscribe, bypass while not
subscribed, and what still works while Redis is down."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import fakeredis
import pytest
from redis.asyncio import Redis

from app.domain.errors import CacheUnavailable
from app.services.tiered_cache_backend import TieredApiKeyCacheBackend
from tests.services.tiered_support import TieredFactory, build_tiered, eventually, ready

KEY = "c" * 64
UNCACHED = "d" * 64


def active() -> SimpleNamespace:
    return SimpleNamespace(apiKey="game_AbCd1234", active=True)


def revoked() -> SimpleNamespace:
    return SimpleNamespace(apiKey="game_AbCd1234", active=False)


@pytest.fixture
async def worker(
    fake_server: fakeredis.FakeServer, key_prefix: str, tiered_factory: TieredFactory
) -> TieredApiKeyCacheBackend:
    # A breaker that stays closed: these tests are about the listener, not the breaker.
    backend = tiered_factory(
        fakeredis.FakeAsyncRedis(server=fake_server), key_prefix, failure_threshold=1_000
    )
    await ready(backend)
    await backend.set(KEY, active(), 60)
    assert await backend.get(KEY) is not None
    assert backend.local_entries == 1
    return backend


async def test_every_resubscribe_flushes_the_l1_before_it_is_trusted_again(
    worker: TieredApiKeyCacheBackend, fake_server: fakeredis.FakeServer
) -> None:
    assert worker.listener.subscriptions == 1

    fake_server.connected = False
    await eventually(lambda: not worker.listener.healthy, "the listener noticed the outage")
    assert worker.local_entries == 1, "losing the listener alone keeps the L1 as a fallback"
    fake_server.connected = True
    await eventually(lambda: worker.listener.healthy, "the listener re-subscribed")

    assert worker.listener.subscriptions == 2
    assert worker.local_entries == 0, "messages of the gap are lost: the L1 must start empty"
    cached = await worker.get(KEY)
    assert cached is not None and cached.active is True
    assert worker.local_entries == 1, "trusted again, the L1 refills"


async def test_while_redis_is_down_only_l1_entries_from_a_healthy_time_answer(
    worker: TieredApiKeyCacheBackend, fake_server: fakeredis.FakeServer
) -> None:
    fake_server.connected = False
    await eventually(lambda: not worker.listener.healthy, "the listener noticed the outage")

    cached = await worker.get(KEY)
    assert cached is not None and cached.active is True
    assert await worker.get(UNCACHED) is None, "a miss goes to the database"
    assert await worker.add(UNCACHED, active(), 60) is False
    await worker.set(UNCACHED, active(), 60)  # degrades like the redis backend
    assert worker.local_entries == 1, "nothing is filled while the listener is down"
    fake_server.connected = True


async def test_while_redis_is_down_the_l1_still_expires(
    fake_server: fakeredis.FakeServer, key_prefix: str, tiered_factory: TieredFactory
) -> None:
    backend = tiered_factory(
        fakeredis.FakeAsyncRedis(server=fake_server),
        key_prefix,
        l1_ttl_seconds=1,
        failure_threshold=1_000,
    )
    await ready(backend)
    await backend.set(KEY, active(), 60)
    assert await backend.get(KEY) is not None

    fake_server.connected = False
    deadline = asyncio.get_running_loop().time() + 10
    while await backend.get(KEY) is not None:
        assert asyncio.get_running_loop().time() < deadline, "L1 outlived its TTL during outage"
        await asyncio.sleep(0.05)
    fake_server.connected = True


@pytest.mark.parametrize("operation", ["invalidate", "delete", "clear"])
async def test_a_failed_invalidation_raises(
    worker: TieredApiKeyCacheBackend, fake_server: fakeredis.FakeServer, operation: str
) -> None:
    fake_server.connected = False
    with pytest.raises(CacheUnavailable):
        if operation == "invalidate":
            await worker.invalidate(KEY, revoked(), 60)
        elif operation == "delete":
            await worker.delete(KEY)
        else:
            await worker.clear()
    fake_server.connected = True


async def test_an_unsubscribed_l1_is_bypassed_for_the_shared_value(
    worker: TieredApiKeyCacheBackend, fake_redis: Redis, key_prefix: str
) -> None:
    await worker.aclose()
    # Changed behind the back of a worker that is not listening (as in a re-subscribe gap).
    await fake_redis.set(key_prefix + KEY, b'{"apiKey":"game_AbCd1234","active":false}', ex=60)

    cached = await worker.get(KEY)

    assert cached is not None and cached.active is False
    await ready(worker)
    assert worker.local_entries == 0


async def test_an_unreadable_message_on_the_channel_flushes_the_l1(
    worker: TieredApiKeyCacheBackend, fake_redis: Redis
) -> None:
    await fake_redis.publish(worker.listener.channel, b"not json")
    await eventually(lambda: worker.local_entries == 0, "the L1 was flushed")
    assert worker.listener.healthy


def test_the_backend_is_built_outside_a_loop_and_survives_a_change_of_loop(
    fake_server: fakeredis.FakeServer, key_prefix: str
) -> None:
    backend = build_tiered(fakeredis.FakeAsyncRedis(server=fake_server), key_prefix)

    async def fill() -> None:
        await ready(backend)
        await backend.set(KEY, active(), 60)
        assert await backend.get(KEY) is not None

    async def use_then_close() -> None:
        try:
            cached = await backend.get(KEY)
            assert cached is not None and cached.active is True
            await ready(backend)
            assert backend.listener.healthy
        finally:
            await backend.aclose()

    asyncio.run(fill())  # the loop ends with the listener still running
    asyncio.run(use_then_close())
