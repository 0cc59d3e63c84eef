"""Redis outages against a real ``redis-server`` the test owns: stopped, SIGSTOPped, DEBUG SLEEP.

Through the production client (explicit timeouts and retry, bounded pool) and the circuit
breaker: valid keys keep authenticating from the repository, revoked keys stay refused, no call
waits much longer than one Redis timeout (a bound on a hang, with generous slack for a busy
machine — not a speed assertion), the breaker opens and later probes, and when Redis is back the
cache serves hits again, with the right answers, without a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.clients.redis_client import build_redis_client
from app.domain.errors import InvalidApiKey
from app.services.apikey_cache_backend import RedisApiKeyCacheBackend
from app.services.apikey_service import (
    ApiKeyService,
    AuthenticatedKey,
    CreatedKey,
    RevocationResult,
)
from app.services.cache_factories import guard_cache
from app.services.metrics import CacheMetrics
from tests.correctness.support import ControlledRepository, ManualClock, timed
from tests.support.redis_server import RedisServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.redis_server]

REDIS_TIMEOUT_MS = 100
THRESHOLD = 3
RESET_SECONDS = 5.0
# One Redis timeout plus an in-memory lookup, with a second of slack for a loaded 2-core box.
# A hang (SIGSTOP without client timeouts, or DEBUG SLEEP) would blow through it.
HANG_BOUND_SECONDS = REDIS_TIMEOUT_MS / 1000 + 1.0
SLEEP_SECONDS = 3


@dataclass
class Harness:
    server: RedisServerProcess
    client: Redis
    clock: ManualClock = field(default_factory=ManualClock)
    metrics: CacheMetrics = field(default_factory=CacheMetrics)
    repository: ControlledRepository = field(default_factory=ControlledRepository.in_memory)

    def __post_init__(self) -> None:
        self.breaker = guard_cache(
            RedisApiKeyCacheBackend(self.client, key_prefix="game:apikey:"),
            failure_threshold=THRESHOLD,
            reset_after_seconds=RESET_SECONDS,
            operation_timeout_seconds=REDIS_TIMEOUT_MS / 1000,
            metrics=self.metrics,
            clock=self.clock,
        )
        self.service = ApiKeyService(self.breaker, self.repository, metrics=self.metrics)

    async def bounded(self, call: Callable[[], Awaitable[object]]) -> object | BaseException:
        outcome, elapsed = await timed(call)
        assert elapsed < HANG_BOUND_SECONDS, f"a call waited {elapsed:.2f}s: Redis hang leaked"
        return outcome

    async def check_answers(self, valid: CreatedKey, revoked: CreatedKey) -> None:
        admitted = await self.bounded(lambda: self.service.authenticate(valid.plaintext))
        assert isinstance(admitted, AuthenticatedKey)
        assert admitted.prefix == valid.record.prefix
        refused = await self.bounded(lambda: self.service.authenticate(revoked.plaintext))
        assert isinstance(refused, InvalidApiKey) and refused.reason == "revoked"


@pytest.fixture
async def harness(private_redis: RedisServerProcess) -> AsyncIterator[Harness]:
    client = build_redis_client(
        private_redis.url,
        socket_timeout_ms=REDIS_TIMEOUT_MS,
        connect_timeout_ms=REDIS_TIMEOUT_MS,
    )
    try:
        yield Harness(private_redis, client)
    finally:
        private_redis.resume()
        await client.aclose()


async def _answers(url: str) -> bool:
    checker = Redis.from_url(url, socket_timeout=0.05, socket_connect_timeout=0.5)
    try:
        return bool(await checker.ping())
    except RedisError:
        return False
    finally:
        await checker.aclose()


async def _until(condition: Callable[[], Awaitable[bool]], within_seconds: float = 15) -> None:
    """Poll an outside process (no event can tell us) until ``condition`` holds, with a deadline."""
    async with asyncio.timeout(within_seconds):
        while not await condition():  # noqa: ASYNC110 - the state lives in another process
            await asyncio.sleep(0.02)


class Outage:
    """How a scenario takes Redis away and gives it back."""

    async def begin(self, server: RedisServerProcess) -> None:
        raise NotImplementedError

    async def end(self, server: RedisServerProcess) -> None:
        raise NotImplementedError


class Stopped(Outage):
    async def begin(self, server: RedisServerProcess) -> None:
        server.stop()

    async def end(self, server: RedisServerProcess) -> None:
        server.start()


class Paused(Outage):
    async def begin(self, server: RedisServerProcess) -> None:
        server.pause()

    async def end(self, server: RedisServerProcess) -> None:
        server.resume()
        await _until(lambda: _answers(server.url))


class DebugSleep(Outage):
    def __init__(self) -> None:
        self._sleeper: Redis | None = None
        self._sleep: asyncio.Task[object] | None = None

    async def begin(self, server: RedisServerProcess) -> None:
        self._sleeper = Redis.from_url(server.url, socket_timeout=SLEEP_SECONDS + 10)
        self._sleep = asyncio.create_task(
            self._sleeper.execute_command("DEBUG", "SLEEP", SLEEP_SECONDS)  # type: ignore[no-untyped-call]
        )

        async def hung() -> bool:
            return not await _answers(server.url)

        await _until(hung)

    async def end(self, server: RedisServerProcess) -> None:
        assert self._sleep is not None and self._sleeper is not None
        try:
            await asyncio.wait_for(self._sleep, timeout=SLEEP_SECONDS + 10)
        finally:
            await self._sleeper.aclose()


OUTAGES: dict[str, Callable[[], Outage]] = {
    "stopped": Stopped,
    "sigstop": Paused,
    "debug-sleep": DebugSleep,
}


@pytest.mark.parametrize("kind", sorted(OUTAGES))
async def test_outage_keeps_answers_right_bounds_waits_and_recovers(
    harness: Harness, kind: str
) -> None:
    valid = await harness.service.create("valid", ["read"])
    revoked = await harness.service.create("revoked", ["read"])
    await harness.service.authenticate(valid.plaintext)
    assert (await harness.service.revoke(revoked.record.prefix)).invalidation.confirmed
    await harness.check_answers(valid, revoked)

    outage = OUTAGES[kind]()
    await outage.begin(harness.server)
    try:
        for _ in range(THRESHOLD):
            await harness.check_answers(valid, revoked)
        assert harness.breaker.is_open and harness.metrics.breaker_opened == 1
        errors = harness.metrics.cache_errors
        await harness.check_answers(valid, revoked)
        assert harness.metrics.cache_errors == errors, "an open circuit still called Redis"
    finally:
        await outage.end(harness.server)

    harness.clock.advance(RESET_SECONDS)
    await harness.check_answers(valid, revoked)
    assert not harness.breaker.is_open
    await harness.check_answers(valid, revoked)  # refills what a restart lost
    hits, lookups = harness.metrics.cache_hits, harness.repository.digest_lookups
    await harness.check_answers(valid, revoked)
    assert harness.metrics.cache_hits == hits + 2
    assert harness.repository.digest_lookups == lookups


@pytest.mark.parametrize("kind", ["stopped", "sigstop"])
async def test_revoke_while_redis_is_unreachable_commits_and_reports(
    harness: Harness, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    key = await harness.service.create("doomed", ["read"])
    await harness.service.authenticate(key.plaintext)
    caplog.set_level(logging.INFO)

    outage = OUTAGES[kind]()
    await outage.begin(harness.server)
    try:
        result = await harness.bounded(lambda: harness.service.revoke(key.record.prefix))
        refused = await harness.bounded(lambda: harness.service.authenticate(key.plaintext))
    finally:
        await outage.end(harness.server)

    assert isinstance(result, RevocationResult)
    assert result.invalidation.confirmed is False
    stored = await harness.repository.get_by_prefix(key.record.prefix)
    assert stored is not None and stored.revoked_at is not None
    assert harness.metrics.invalidation_failures == 1
    assert any(
        r.levelno >= logging.ERROR and key.record.prefix in r.getMessage() for r in caplog.records
    )
    assert isinstance(refused, InvalidApiKey)
