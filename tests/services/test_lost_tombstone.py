"""A revocation tombstone lost by Redis (a failover promoted a replica that never received it)
must not bring the key back: not in a process that applied the revocation, not in one started
after it.

The loss is staged on one (fake) Redis: the entries as they were before the revoke are written
back over the tombstone and the revoked record, which is what the demoted primary's clients find
once it has resynchronised from the new primary. For ``tiered`` the re-subscription that follows
a failover is staged too (the L1 is flushed), so the next read goes to Redis and copies what it
finds into process memory.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

import fakeredis
import pytest
from redis.asyncio import Redis

from app.domain.errors import InvalidApiKey
from app.domain.keys import digest
from app.repositories.memory import InMemoryApiKeyRepository, InMemoryEventLog
from app.services import cache_factories
from app.services.apikey_service import ApiKeyService
from app.services.cache_protocol import CoherentCacheBackend
from app.services.redis_cache_backend import decode_value
from app.services.tiered_cache_backend import TieredApiKeyCacheBackend
from tests.conftest import TEST_HMAC_SECRET
from tests.services.tiered_support import build_tiered, ready

POLL = 0.05
LEASE = 0.6


class Process(Protocol):
    def __call__(self, *, replicated: bool = False) -> Awaitable[ApiKeyService]: ...


@pytest.fixture(params=["redis", "tiered"])
async def process(
    request: pytest.FixtureRequest, fake_server: fakeredis.FakeServer, key_prefix: str
) -> AsyncIterator[Process]:
    """Start serving processes on one shared repository (and event log) and one Redis; all
    closed at the end. ``replicated``: as the container builds it for Sentinel and Cluster."""
    keys = InMemoryApiKeyRepository()
    log = InMemoryEventLog(keys)
    started: list[ApiKeyService] = []

    async def start(*, replicated: bool = False) -> ApiKeyService:
        client: Redis = fakeredis.FakeAsyncRedis(server=fake_server)
        cache: CoherentCacheBackend
        if request.param == "tiered":
            cache = build_tiered(client, key_prefix)
            await ready(cache)
        else:
            cache = cache_factories.redis_cache(client, key_prefix=key_prefix)
        service = ApiKeyService(
            cache,
            keys,
            event_log=log,
            poll_interval_seconds=POLL,
            lease_seconds=LEASE,
            finality_timeout_seconds=5,
            records=cache_factories.signed_records_beside(cache, secret=TEST_HMAC_SECRET),
            shared_writes_can_be_lost=replicated,
        )
        await service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        await service.aclose()
        if isinstance(service.cache, TieredApiKeyCacheBackend):
            await service.cache.aclose()


async def snapshot(client: Redis, prefix: str) -> dict[bytes, tuple[bytes, int]]:
    entries = {}
    async for key in client.scan_iter(match=prefix + "*"):
        entries[key] = (await client.get(key), await client.pttl(key))
    return entries


async def test_a_lost_tombstone_is_refused_and_written_again(
    process: Process, fake_server: fakeredis.FakeServer, key_prefix: str
) -> None:
    redis = fakeredis.FakeAsyncRedis(server=fake_server)
    first = await process()
    created = await first.create("victim", ["read"])
    await first.authenticate(created.plaintext)  # cached, with its signed record
    before_revoke = await snapshot(redis, key_prefix)
    assert before_revoke, "the key was not cached"

    await first.revoke(created.record.prefix)
    for key, (value, pttl) in before_revoke.items():  # the failover loses the tombstone
        await redis.set(key, value, px=pttl)
    if isinstance(first.cache, TieredApiKeyCacheBackend):
        first.cache.evict_local(None)  # the listener re-subscribed: L1 flushed

    for _ in range(3):  # the first read copies into process memory; the next would use it
        with pytest.raises(InvalidApiKey):
            await first.authenticate(created.plaintext)

    value_key = key_prefix + digest(created.plaintext)

    async def shared_value_is_tombstone() -> bool:
        value = decode_value(await redis.get(value_key))
        return value is not None and value.active is False

    # Written again after the next poll: a process that never saw the revocation refuses too.
    await eventually_async(shared_value_is_tombstone, "the tombstone was written again")
    later = await process()
    with pytest.raises(InvalidApiKey):
        await later.authenticate(created.plaintext)
    await redis.aclose()


@pytest.mark.parametrize("replicated", [True, False])
async def test_on_a_replicated_topology_revoke_also_waits_for_every_member(
    process: Process, fake_server: fakeredis.FakeServer, key_prefix: str, replicated: bool
) -> None:
    """Where Redis may lose the tombstone after acknowledging it, revoke returns only once the
    other process has applied the revocation from the log (an acknowledgement over the
    invalidation channel only says it dropped its L1), so it refuses the key whatever Redis
    says."""
    redis = fakeredis.FakeAsyncRedis(server=fake_server)
    revoker = await process(replicated=replicated)
    other = await process(replicated=replicated)
    created = await revoker.create("victim", ["read"])
    await other.authenticate(created.plaintext)
    before_revoke = await snapshot(redis, key_prefix)

    result = await revoker.revoke(created.record.prefix)

    if not replicated:
        if not isinstance(revoker.cache, TieredApiKeyCacheBackend):
            assert result.finality.how == "shared tombstone"
        await redis.aclose()
        return
    assert result.finality.how == "acknowledged by every live member"
    assert (result.finality.acknowledged, result.finality.expected) == (1, 1)
    for key, (value, pttl) in before_revoke.items():  # lost in a failover, just after
        await redis.set(key, value, px=pttl)
    if isinstance(other.cache, TieredApiKeyCacheBackend):
        other.cache.evict_local(None)
    for _ in range(3):
        with pytest.raises(InvalidApiKey):
            await other.authenticate(created.plaintext)
    await redis.aclose()


async def eventually_async(
    condition: Callable[[], Awaitable[bool]], what: str, within_seconds: float = 5.0
) -> None:
    """``eventually`` for a condition that needs an await."""
    deadline = time.monotonic() + within_seconds
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(POLL / 5)


async def test_a_process_started_after_the_loss_refuses_the_stale_value(
    process: Process, fake_server: fakeredis.FakeServer, key_prefix: str
) -> None:
    """The tombstone is lost and the revoker is gone before anyone read the stale value: a
    process started afterwards reads the last cache TTL of the log when it starts, so it
    refuses the key and writes the tombstone again."""
    redis = fakeredis.FakeAsyncRedis(server=fake_server)
    revoker = await process()
    created = await revoker.create("victim", ["read"])
    await revoker.authenticate(created.plaintext)
    before_revoke = await snapshot(redis, key_prefix)
    await revoker.revoke(created.record.prefix)
    await revoker.aclose()  # nobody left who applied the revocation
    for key, (value, pttl) in before_revoke.items():  # the failover loses the tombstone
        await redis.set(key, value, px=pttl)

    later = await process()
    for _ in range(3):
        with pytest.raises(InvalidApiKey):
            await later.authenticate(created.plaintext)

    value_key = key_prefix + digest(created.plaintext)

    async def shared_value_is_tombstone() -> bool:
        value = decode_value(await redis.get(value_key))
        return value is not None and value.active is False

    await eventually_async(shared_value_is_tombstone, "the tombstone was written again")
    await redis.aclose()
