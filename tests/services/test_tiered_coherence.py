"""Two tiered backends on one (fake) Redis behave like two workers: coherent, acknowledged."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import fakeredis
import pytest
from redis.asyncio import Redis

from app.services.apikey_cache_backend import RedisApiKeyCacheBackend
from app.services.cache_factories import guard_cache, tiered_cache
from app.services.tiered_cache_backend import TieredApiKeyCacheBackend
from tests.services.tiered_support import TieredFactory, ready

KEY = "a" * 64
OTHER = "b" * 64


def active(prefix: str = "game_AbCd1234") -> SimpleNamespace:
    return SimpleNamespace(apiKey=prefix, active=True)


def revoked(prefix: str = "game_AbCd1234") -> SimpleNamespace:
    return SimpleNamespace(apiKey=prefix, active=False)


class GatedRedisBackend(RedisApiKeyCacheBackend):
    """Counts L2 reads, and can hold one after Redis answered (a read "in flight")."""

    def __init__(self, client: Redis, key_prefix: str) -> None:
        super().__init__(client, key_prefix=key_prefix)
        self.reads = 0
        self.answered = asyncio.Event()
        self.release: asyncio.Event | None = None

    async def get_with_ttl(self, cache_key: str) -> tuple[SimpleNamespace | None, float]:
        self.reads += 1
        result = await super().get_with_ttl(cache_key)
        if self.release is not None:
            self.answered.set()
            await self.release.wait()
        return result


@pytest.fixture
def clients(fake_server: fakeredis.FakeServer) -> tuple[Redis, Redis]:
    return (
        fakeredis.FakeAsyncRedis(server=fake_server),
        fakeredis.FakeAsyncRedis(server=fake_server),
    )


@pytest.fixture
async def workers(
    clients: tuple[Redis, Redis], key_prefix: str, tiered_factory: TieredFactory
) -> tuple[TieredApiKeyCacheBackend, TieredApiKeyCacheBackend]:
    first = tiered_factory(clients[0], key_prefix)
    second = tiered_factory(clients[1], key_prefix)
    await ready(first, second)
    return first, second


async def test_a_miss_fills_the_l1_and_the_next_get_is_served_from_it(
    clients: tuple[Redis, Redis], key_prefix: str
) -> None:
    l2 = GatedRedisBackend(clients[0], key_prefix)
    backend = tiered_cache(guard_cache(l2), watchdog_interval_seconds=0.25)
    try:
        await ready(backend)
        await l2.set(KEY, active(), 60)

        first = await backend.get(KEY)
        for _ in range(100):
            hit = await backend.get(KEY)
            assert hit is not None and vars(hit) == vars(active())

        assert first is not None and first.active is True
        assert l2.reads == 1, "hits must not touch Redis"
        assert backend.local_entries == 1
    finally:
        await backend.aclose()


async def test_add_keeps_a_copy_in_the_l1_of_the_worker_that_filled(
    workers: tuple[TieredApiKeyCacheBackend, TieredApiKeyCacheBackend],
) -> None:
    filler, other = workers
    assert await filler.add(KEY, active(), 60) is True
    assert filler.local_entries == 1
    assert other.local_entries == 0
    assert await filler.add(KEY, revoked(), 60) is False


async def test_invalidate_evicts_every_worker_and_reports_their_acks(
    workers: tuple[TieredApiKeyCacheBackend, TieredApiKeyCacheBackend],
) -> None:
    revoker, other = workers
    await revoker.add(KEY, active(), 60)
    assert await other.get(KEY) is not None
    assert other.local_entries == 1

    report = await revoker.invalidate(KEY, revoked(), 60)

    assert other.local_entries == 0, "revoke returned before the other worker evicted"
    cached = await other.get(KEY)
    assert cached is not None and cached.active is False
    assert report.confirmed is True
    assert report.scope == "all-workers"
    assert (report.acknowledged, report.expected) == (2, 2)


@pytest.mark.parametrize("operation", ["set", "delete", "clear"])
async def test_writes_evict_every_workers_copy_before_they_return(
    workers: tuple[TieredApiKeyCacheBackend, TieredApiKeyCacheBackend], operation: str
) -> None:
    writer, reader = workers
    await writer.set(KEY, active(), 60)
    await writer.set(OTHER, active("game_OtHeR123"), 60)
    assert await reader.get(KEY) is not None
    assert await reader.get(OTHER) is not None
    assert reader.local_entries == 2

    if operation == "set":
        await writer.set(KEY, revoked(), 60)
    elif operation == "delete":
        await writer.delete(KEY)
    else:
        await writer.clear()

    cached = await reader.get(KEY)
    if operation == "set":
        assert cached is not None and cached.active is False
    else:
        assert cached is None
    other = await reader.get(OTHER)
    assert (other is None) == (operation == "clear"), "only the named key is evicted"


async def test_a_subscriber_that_does_not_acknowledge_is_reported_not_waited_for(
    workers: tuple[TieredApiKeyCacheBackend, TieredApiKeyCacheBackend],
    clients: tuple[Redis, Redis],
) -> None:
    revoker, _ = workers
    silent = clients[1].pubsub()
    await silent.subscribe(revoker.listener.channel)
    try:
        report = await revoker.invalidate(KEY, revoked(), 60)
    finally:
        await silent.aclose()

    assert report.confirmed is False
    assert (report.acknowledged, report.expected) == (2, 3)
    assert "2/3" in report.detail


async def test_an_invalidation_that_overtakes_an_l2_read_is_not_undone_by_it(
    clients: tuple[Redis, Redis], key_prefix: str, tiered_factory: TieredFactory
) -> None:
    gated = GatedRedisBackend(clients[1], key_prefix)
    reader = tiered_cache(guard_cache(gated), watchdog_interval_seconds=0.25)
    revoker = tiered_factory(clients[0], key_prefix)
    try:
        await ready(reader, revoker)
        await revoker.set(KEY, active(), 60)
        gated.release = asyncio.Event()

        # The reader's L2 read has its answer ("active") but has not returned it yet...
        in_flight = asyncio.create_task(reader.get(KEY))
        await gated.answered.wait()
        # ...when the revocation lands and the reader's listener evicts.
        report = await revoker.invalidate(KEY, revoked(), 60)
        gated.release.set()
        stale = await in_flight
        gated.release = None

        assert report.confirmed is True
        assert stale is not None and stale.active is True, "the read did start before revoke"
        assert reader.local_entries == 0, "the overtaken read must not fill the L1"
        after = await reader.get(KEY)
        assert after is not None and after.active is False
    finally:
        await reader.aclose()


async def test_a_local_invalidation_also_voids_this_workers_read_in_flight(
    fake_redis: Redis, key_prefix: str
) -> None:
    gated = GatedRedisBackend(fake_redis, key_prefix)
    backend = tiered_cache(guard_cache(gated), watchdog_interval_seconds=0.25)
    try:
        await ready(backend)
        await gated.set(KEY, active(), 60)
        release = gated.release = asyncio.Event()
        in_flight = asyncio.create_task(backend.get(KEY))
        await gated.answered.wait()

        await backend.invalidate(KEY, revoked(), 60)
        gated.release = None
        release.set()
        await in_flight

        assert backend.local_entries == 0
        cached = await backend.get(KEY)
        assert cached is not None and cached.active is False
    finally:
        await backend.aclose()


async def test_the_l1_is_bounded(
    fake_redis: Redis, key_prefix: str, tiered_factory: TieredFactory
) -> None:
    backend = tiered_factory(fake_redis, key_prefix, l1_max_entries=2)
    await ready(backend)
    for index in range(3):
        assert await backend.add(f"{index:064x}", active(), 60)
    assert backend.local_entries == 2
    assert await backend.get(f"{0:064x}") is not None, "evicted from L1, still in L2"


async def test_an_l1_entry_never_outlives_the_l2_entry_it_copies(
    fake_redis: Redis, key_prefix: str, tiered_factory: TieredFactory
) -> None:
    backend = tiered_factory(fake_redis, key_prefix, l1_ttl_seconds=60)
    await ready(backend)
    await backend.set(KEY, active(), 1)
    assert await backend.get(KEY) is not None
    assert backend.local_entries == 1

    deadline = asyncio.get_running_loop().time() + 10
    while await fake_redis.exists(key_prefix + KEY):
        assert asyncio.get_running_loop().time() < deadline, "the 1 s L2 entry never expired"
        await asyncio.sleep(0.01)
    assert await backend.get(KEY) is None, "the L1 copy outlived the L2 entry"


async def test_the_l1_ttl_caps_an_entry_below_the_l2_ttl(
    fake_redis: Redis, key_prefix: str
) -> None:
    gated = GatedRedisBackend(fake_redis, key_prefix)
    backend = tiered_cache(guard_cache(gated), l1_ttl_seconds=1, watchdog_interval_seconds=0.25)
    try:
        await ready(backend)
        await gated.set(KEY, active(), 60)
        assert await backend.get(KEY) is not None
        assert gated.reads == 1

        async def served_by_l2_again() -> bool:
            await backend.get(KEY)
            return gated.reads > 1

        deadline = asyncio.get_running_loop().time() + 10
        while not await served_by_l2_again():
            assert asyncio.get_running_loop().time() < deadline, "L1 entry outlived its L1 TTL"
            await asyncio.sleep(0.05)
    finally:
        await backend.aclose()


async def test_a_zero_l1_ttl_disables_the_l1(
    fake_redis: Redis, key_prefix: str, tiered_factory: TieredFactory
) -> None:
    backend = tiered_factory(fake_redis, key_prefix, l1_ttl_seconds=0)
    await ready(backend)
    await backend.set(KEY, active(), 60)
    assert await backend.get(KEY) is not None
    assert backend.local_entries == 0


async def test_concurrent_misses_of_one_key_share_one_l2_read(
    fake_redis: Redis, key_prefix: str
) -> None:
    """A storm of first requests must not queue one L2 read each on the bounded pool."""
    gated = GatedRedisBackend(fake_redis, key_prefix)
    backend = tiered_cache(guard_cache(gated), watchdog_interval_seconds=0.25)
    try:
        await ready(backend)
        await gated.set(KEY, active(), 60)
        gated.release = asyncio.Event()
        first = asyncio.create_task(backend.get(KEY))
        await gated.answered.wait()
        others = [asyncio.create_task(backend.get(KEY)) for _ in range(200)]
        await asyncio.sleep(0)
        gated.release.set()

        results = await asyncio.gather(first, *others)

        assert gated.reads == 1
        assert all(value is not None and value.active for value in results)
    finally:
        await backend.aclose()


async def test_a_miss_after_an_eviction_does_not_join_the_read_it_made_stale(
    clients: tuple[Redis, Redis], key_prefix: str, tiered_factory: TieredFactory
) -> None:
    """A request arriving after the revocation reached this worker reads the L2 afresh."""
    gated = GatedRedisBackend(clients[1], key_prefix)
    reader = tiered_cache(guard_cache(gated), watchdog_interval_seconds=0.25)
    revoker = tiered_factory(clients[0], key_prefix)
    try:
        await ready(reader, revoker)
        await revoker.set(KEY, active(), 60)
        release = gated.release = asyncio.Event()
        in_flight = asyncio.create_task(reader.get(KEY))
        await gated.answered.wait()

        report = await revoker.invalidate(KEY, revoked(), 60)
        assert report.confirmed is True  # the reader's listener has evicted
        gated.release = None
        late_request = asyncio.create_task(reader.get(KEY))
        await asyncio.wait({late_request}, timeout=5)  # a fresh read needs no release
        release.set()
        await in_flight
        late = await late_request

        assert late is not None and late.active is False
        assert gated.reads == 2
    finally:
        await reader.aclose()
