"""Fault injection against a real redis-server: killed listener connections, a restart, a hang,
and a subscriber that never acknowledges. Each worker uses the production client (explicit
timeouts, one silent retry), so redis-py's quiet re-subscribe is what the listener must catch."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace

import pytest
from redis.asyncio import Redis

from app.clients.redis_client import build_redis_client
from app.domain.errors import CacheUnavailable
from app.services.tiered_cache_backend import TieredApiKeyCacheBackend
from tests.services.tiered_support import TieredFactory, eventually, ready
from tests.support.redis_server import RedisServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.redis_server]

KEY = "e" * 64

Workers = tuple[TieredApiKeyCacheBackend, TieredApiKeyCacheBackend]


def active() -> SimpleNamespace:
    return SimpleNamespace(apiKey="game_AbCd1234", active=True)


def revoked() -> SimpleNamespace:
    return SimpleNamespace(apiKey="game_AbCd1234", active=False)


@pytest.fixture
async def clients_of() -> AsyncIterator[Callable[[str], Redis]]:
    """Production clients on a URL; all closed at teardown."""
    made: list[Redis] = []

    def make(url: str) -> Redis:
        client = build_redis_client(url)
        made.append(client)
        return client

    try:
        yield make
    finally:
        for client in made:
            await client.aclose()


@pytest.fixture
async def private_workers(
    private_redis: RedisServerProcess,
    clients_of: Callable[[str], Redis],
    tiered_factory: TieredFactory,
    key_prefix: str,
) -> Workers:
    """Two workers (revoker, reader) on a redis-server of this test's own."""
    revoker, reader = (
        tiered_factory(
            clients_of(private_redis.url),
            key_prefix,
            reset_after_seconds=0.2,
            watchdog_interval_seconds=0.25,
        )
        for _ in range(2)
    )
    await ready(revoker, reader)
    return revoker, reader


async def cached_in_reader(workers: Workers) -> None:
    revoker, reader = workers
    assert await revoker.add(KEY, active(), 60) is True
    cached = await reader.get(KEY)
    assert cached is not None and cached.active is True
    assert reader.local_entries == 1


async def revocation_reaches_both(workers: Workers) -> None:
    revoker, reader = workers
    report = await revoker.invalidate(KEY, revoked(), 60)
    assert report.confirmed is True, report.detail
    assert (report.acknowledged, report.expected) == (2, 2)
    assert reader.local_entries == 0
    cached = await reader.get(KEY)
    assert cached is not None and cached.active is False


async def test_a_killed_listener_connection_flushes_and_recovers(
    private_workers: Workers, private_redis: RedisServerProcess
) -> None:
    revoker, reader = private_workers
    await cached_in_reader(private_workers)
    admin = Redis.from_url(private_redis.url)
    try:
        killed = await admin.client_kill_filter(_type="pubsub")
    finally:
        await admin.aclose()
    assert killed == 2

    await eventually(
        lambda: reader.listener.subscriptions == 2 and reader.listener.healthy,
        "the reader re-subscribed",
    )
    assert reader.local_entries == 0, "the re-subscribe must flush the L1"
    await eventually(lambda: revoker.listener.healthy, "the revoker re-subscribed")

    await revoker.delete(KEY)
    await cached_in_reader(private_workers)
    await revocation_reaches_both(private_workers)


async def test_a_redis_restart_mid_test(
    private_workers: Workers, private_redis: RedisServerProcess
) -> None:
    revoker, reader = private_workers
    await cached_in_reader(private_workers)

    private_redis.stop()
    await eventually(lambda: not reader.listener.healthy, "the reader noticed the outage")
    during = await reader.get(KEY)
    assert during is not None and during.active is True, "L1 filled while healthy answers"
    with pytest.raises(CacheUnavailable):
        await revoker.invalidate(KEY, revoked(), 60)

    private_redis.start()
    await eventually(
        lambda: reader.listener.healthy and revoker.listener.healthy, "both re-subscribed"
    )
    assert reader.local_entries == 0
    assert await reader.get(KEY) is None, "the restarted server is empty; so is the L1"
    await cached_in_reader(private_workers)
    await revocation_reaches_both(private_workers)


async def test_the_watchdog_detects_a_hung_server_and_recovers(
    private_workers: Workers, private_redis: RedisServerProcess
) -> None:
    revoker, reader = private_workers
    await cached_in_reader(private_workers)
    subscriptions = reader.listener.subscriptions

    private_redis.pause()  # sockets stay open; nothing answers, not even a PONG
    try:
        await eventually(lambda: not reader.listener.healthy, "the watchdog noticed the hang")
        during = await reader.get(KEY)
        assert during is not None and during.active is True
    finally:
        private_redis.resume()

    await eventually(
        lambda: reader.listener.subscriptions > subscriptions and reader.listener.healthy,
        "the reader re-subscribed",
    )
    await eventually(lambda: revoker.listener.healthy, "the revoker re-subscribed")
    assert reader.local_entries == 0
    await revoker.delete(KEY)
    await cached_in_reader(private_workers)
    await revocation_reaches_both(private_workers)


async def test_a_subscriber_that_cannot_acknowledge_in_time_is_reported(
    real_redis: Redis, redis_url: str, key_prefix: str, tiered_factory: TieredFactory
) -> None:
    revoker = tiered_factory(real_redis, key_prefix, ack_timeout_ms=200)
    await ready(revoker)
    # A worker whose event loop is stuck: subscribed, so PUBLISH counts it, but it never acks.
    stuck_client = Redis.from_url(redis_url)
    stuck = stuck_client.pubsub()
    await stuck.subscribe(revoker.listener.channel)
    try:
        report = await revoker.invalidate(KEY, revoked(), 60)
    finally:
        await stuck.aclose()
        await stuck_client.aclose()

    assert report.confirmed is False
    assert (report.acknowledged, report.expected) == (1, 2)
    assert "1/2" in report.detail and "200ms" in report.detail
    after = await revoker.invalidate(KEY, revoked(), 60)
    assert after.confirmed is True and (after.acknowledged, after.expected) == (1, 1)
