"""Two processes' worth of the revocation path, in one event loop: the event log, leases,
members, and a revoke that returns only once every member applied it or let its lease lapse."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from app.domain.errors import InvalidApiKey, RepositoryUnavailable
from app.repositories.memory import InMemoryApiKeyRepository, InMemoryEventLog
from app.services.apikey_service import ApiKeyService
from app.services.memory_cache_backend import InMemoryApiKeyCacheBackend

POLL = 0.05
LEASE = 0.6


class FlakyLog(InMemoryEventLog):
    """The shared log as one process sees it: ``cut`` makes every call fail (a partition)."""

    def __init__(self, keys: InMemoryApiKeyRepository, members: InMemoryEventLog) -> None:
        super().__init__(keys)
        self._members = members._members  # one registry for every process
        self.cut = False

    async def events_after(self, event_id: int, limit: int):  # type: ignore[no-untyped-def]
        if self.cut:
            raise RepositoryUnavailable("cut off (test)")
        return await super().events_after(event_id, limit)


@pytest.fixture
async def processes() -> AsyncIterator[tuple[ApiKeyService, ApiKeyService, FlakyLog]]:
    keys = InMemoryApiKeyRepository()
    registry = InMemoryEventLog(keys)

    def process(log: InMemoryEventLog) -> ApiKeyService:
        return ApiKeyService(
            InMemoryApiKeyCacheBackend(),
            keys,
            event_log=log,
            poll_interval_seconds=POLL,
            lease_seconds=LEASE,
            finality_timeout_seconds=5,
        )

    b_log = FlakyLog(keys, registry)
    a, b = process(FlakyLog(keys, registry)), process(b_log)
    await a.start()
    await b.start()
    yield a, b, b_log
    await a.aclose()
    await b.aclose()


async def test_revoke_returns_once_the_other_process_applied_it(
    processes: tuple[ApiKeyService, ApiKeyService, FlakyLog],
) -> None:
    a, b, _ = processes
    created = await a.create("victim", ["read"])
    await b.authenticate(created.plaintext)  # now in b's local cache
    assert (await b.authenticate(created.plaintext)).prefix == created.record.prefix

    result = await a.revoke(created.record.prefix)

    assert result.finality.final and result.finality.how == "acknowledged by every live member"
    assert (result.finality.acknowledged, result.finality.expected) == (1, 1)
    with pytest.raises(InvalidApiKey):
        await b.authenticate(created.plaintext)


async def test_a_cut_off_process_stops_trusting_its_copies_and_revoke_waits_for_that(
    processes: tuple[ApiKeyService, ApiKeyService, FlakyLog],
) -> None:
    a, b, b_log = processes
    created = await a.create("victim", ["read"])
    await b.authenticate(created.plaintext)
    b_log.cut = True  # b can no longer read the log (nor renew its lease)

    started = time.monotonic()
    result = await a.revoke(created.record.prefix)
    waited = time.monotonic() - started

    assert result.finality.final and result.finality.how == "leases lapsed"
    assert len(result.finality.lapsed) == 1
    assert waited <= LEASE + 1.0
    follower = b.follower
    assert follower is not None and not follower.lease_valid()
    # b's cached copy is no longer used: it asks the database, which refuses the key.
    with pytest.raises(InvalidApiKey):
        await b.authenticate(created.plaintext)


async def test_the_lease_is_renewed_while_the_log_answers_and_lapses_when_it_does_not(
    processes: tuple[ApiKeyService, ApiKeyService, FlakyLog],
) -> None:
    _, b, b_log = processes
    follower = b.follower
    assert follower is not None and follower.lease_valid()
    lags: list[float] = []
    follower.on_progress = lags.append

    b_log.cut = True
    deadline = time.monotonic() + LEASE * 4
    while follower.lease_valid() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(POLL)  # polling a condition with a deadline: nothing to wait on

    assert not follower.lease_valid()
    assert lags and max(lags) >= LEASE * 0.5  # the lag grew while the log was cut
    b_log.cut = False
    deadline = time.monotonic() + LEASE * 4
    while not follower.lease_valid() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(POLL)
    assert follower.lease_valid()
