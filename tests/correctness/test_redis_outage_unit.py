"""Redis outages at unit level: fakeredis with ``server.connected = False``, a hand-moved clock.

While the cache is down valid keys authenticate from the repository and revoked keys are refused;
after ``failure_threshold`` failures the breaker opens and the cache is skipped; once the reset
time has passed one probe is let through, and when Redis is back the cache is used again.
"""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import fakeredis
import pytest
from redis.asyncio import Redis

from app.domain.errors import InvalidApiKey
from app.domain.keys import digest
from app.services.apikey_cache_backend import RedisApiKeyCacheBackend
from app.services.apikey_service import ApiKeyService, CreatedKey
from app.services.cache_factories import guard_cache
from app.services.cache_protocol import InvalidationReport
from app.services.metrics import CacheMetrics
from tests.correctness.support import ControlledRepository, CountingCache, ManualClock

THRESHOLD = 3
RESET_SECONDS = 5.0


class Setup:
    def __init__(
        self,
        fake_server: fakeredis.FakeServer,
        client: Redis,
        key_prefix: str,
        failure_threshold: int = THRESHOLD,
    ) -> None:
        self.server = fake_server
        self.clock = ManualClock()
        self.metrics = CacheMetrics()
        self.redis_backend = RedisApiKeyCacheBackend(client, key_prefix=key_prefix)
        self.counting = CountingCache(self.redis_backend)
        self.breaker = guard_cache(
            self.counting,
            failure_threshold=failure_threshold,
            reset_after_seconds=RESET_SECONDS,
            operation_timeout_seconds=5.0,
            metrics=self.metrics,
            clock=self.clock,
        )
        self.repository = ControlledRepository.in_memory()
        self.service = ApiKeyService(self.breaker, self.repository, metrics=self.metrics)

    async def valid_and_revoked(self) -> tuple[CreatedKey, CreatedKey]:
        valid = await self.service.create("valid", ["read"])
        revoked = await self.service.create("revoked", ["read"])
        await self.service.authenticate(valid.plaintext)
        await self.service.authenticate(revoked.plaintext)
        assert (await self.service.revoke(revoked.record.prefix)).invalidation.confirmed
        return valid, revoked


@pytest.fixture
def setup(fake_server: fakeredis.FakeServer, fake_redis: Redis, key_prefix: str) -> Setup:
    return Setup(fake_server, fake_redis, key_prefix)


async def _still_correct(setup: Setup, valid: CreatedKey, revoked: CreatedKey) -> None:
    admitted = await setup.service.authenticate(valid.plaintext)
    assert admitted.prefix == valid.record.prefix
    with pytest.raises(InvalidApiKey):
        await setup.service.authenticate(revoked.plaintext)


async def test_down_redis_opens_the_breaker_and_recovers_after_a_probe(setup: Setup) -> None:
    valid, revoked = await setup.valid_and_revoked()
    setup.server.connected = False

    await _still_correct(setup, valid, revoked)
    await _still_correct(setup, valid, revoked)
    assert setup.breaker.is_open
    assert setup.metrics.breaker_opened == 1
    assert setup.metrics.cache_errors == THRESHOLD

    # Open: the cache is skipped entirely, and both answers still come from the repository.
    calls_while_open = setup.counting.calls.total()
    lookups = setup.repository.digest_lookups
    await _still_correct(setup, valid, revoked)
    assert setup.counting.calls.total() == calls_while_open
    assert setup.repository.digest_lookups == lookups + 2
    assert setup.metrics.cache_bypassed > 0

    # After the reset time one probe goes through; Redis is still down, so it stays open.
    setup.clock.advance(RESET_SECONDS)
    await _still_correct(setup, valid, revoked)
    assert setup.counting.calls.total() == calls_while_open + 1
    assert setup.breaker.is_open and setup.metrics.breaker_opened == 1

    # Redis is back: the next probe closes the circuit and the cache serves hits again.
    setup.server.connected = True
    setup.clock.advance(RESET_SECONDS)
    await _still_correct(setup, valid, revoked)
    assert not setup.breaker.is_open
    hits = setup.metrics.cache_hits
    lookups = setup.repository.digest_lookups
    await _still_correct(setup, valid, revoked)
    assert setup.metrics.cache_hits == hits + 2
    assert setup.repository.digest_lookups == lookups


async def test_an_uncached_valid_key_authenticates_while_redis_is_down(setup: Setup) -> None:
    fresh = await setup.service.create("fresh", ["read"])
    setup.server.connected = False
    for _ in range(2 * THRESHOLD):
        admitted = await setup.service.authenticate(fresh.plaintext)
        assert admitted.prefix == fresh.record.prefix


async def test_a_cancelled_probe_does_not_keep_the_circuit_shut_for_good(setup: Setup) -> None:
    """The request carrying the probe is cancelled (a client hung up) while Redis hangs."""
    valid, revoked = await setup.valid_and_revoked()
    setup.server.connected = False
    for _ in range(THRESHOLD):
        await setup.service.authenticate(valid.plaintext)
    assert setup.breaker.is_open
    setup.server.connected = True

    hang = asyncio.Event()
    entered = asyncio.Event()
    real_get = setup.redis_backend.get

    async def hanging_get(cache_key: str) -> SimpleNamespace | None:
        entered.set()
        await hang.wait()
        return await real_get(cache_key)

    setup.redis_backend.get = hanging_get  # type: ignore[method-assign]
    setup.clock.advance(RESET_SECONDS)
    probe = asyncio.create_task(setup.service.authenticate(valid.plaintext))
    await asyncio.wait_for(entered.wait(), timeout=10)
    probe.cancel()
    await asyncio.wait({probe}, timeout=10)
    assert probe.cancelled()

    setup.redis_backend.get = real_get  # type: ignore[method-assign]
    await _still_correct(setup, valid, revoked)
    assert not setup.breaker.is_open, "the cancelled probe left the circuit unable to probe"


async def test_revoke_while_redis_is_down_commits_reports_logs_and_counts(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    key = await setup.service.create("doomed", ["read"])
    await setup.service.authenticate(key.plaintext)
    setup.server.connected = False
    caplog.set_level(logging.INFO)

    result = await setup.service.revoke(key.record.prefix)

    assert isinstance(result.invalidation, InvalidationReport)
    assert result.invalidation.confirmed is False
    assert "cache" in result.invalidation.detail
    stored = await setup.repository.get_by_prefix(key.record.prefix)
    assert stored is not None and stored.revoked_at is not None
    assert setup.metrics.invalidation_failures == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(key.record.prefix in r.getMessage() for r in errors)
    # This process refuses the key at once, even with Redis down.
    with pytest.raises(InvalidApiKey):
        await setup.service.authenticate(key.plaintext)
    # The stale shared entry is the documented residue: it is still there, marked active.
    setup.server.connected = True
    stale = await setup.redis_backend.get(digest(key.plaintext))
    assert stale is not None and stale.active is True


async def test_a_request_pays_for_at_most_one_failed_cache_call(
    fake_server: fakeredis.FakeServer, fake_redis: Redis, key_prefix: str
) -> None:
    """A miss reads, fills and may re-read; against a hung Redis each would cost a timeout.

    With the breaker kept closed (a threshold never reached), every request meets the outage
    afresh; each must stop using the cache after its first failure.
    """
    setup = Setup(fake_server, fake_redis, key_prefix, failure_threshold=1_000)
    fresh = await setup.service.create("fresh", ["read"])
    setup.server.connected = False

    for attempt in range(1, 4):
        admitted = await setup.service.authenticate(fresh.plaintext)
        assert admitted.prefix == fresh.record.prefix
        assert setup.metrics.cache_errors == attempt
        assert setup.counting.calls["add"] == 0
    assert not setup.breaker.is_open
