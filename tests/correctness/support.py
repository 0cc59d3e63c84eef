"""Test doubles for the correctness suite: a repository that pauses or fails on demand, a cache
wrapper that counts calls, and a clock the test moves by hand.

They wrap the real components (the in-memory repository, the real cache backends) and only add
counting and control points, so the behaviour under test stays the production one.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from app.domain.errors import RepositoryUnavailable
from app.repositories.base import (
    OPERATOR,
    ApiKeyRecord,
    ApiKeyRepository,
    AuditActor,
    AuditEntry,
    Revocation,
    Rotation,
)
from app.repositories.memory import InMemoryApiKeyRepository
from app.services.cache_protocol import CoherentCacheBackend, InvalidationReport


class ControlledRepository:
    """Wraps a repository: counts lookups, can pause a digest lookup after it has read, can fail.

    ``pause_digest_reads()`` arms the pause: the next ``get_by_digest`` reads the database, sets
    ``read_done`` and then waits for ``release()`` before returning what it read. That is exactly
    the window of the cache-aside race, forced instead of hoped for.
    """

    def __init__(self, inner: ApiKeyRepository) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self.unavailable = False
        self._pause_armed = False
        self.read_done = asyncio.Event()
        self._released = asyncio.Event()

    @classmethod
    def in_memory(cls) -> ControlledRepository:
        return cls(InMemoryApiKeyRepository())

    @property
    def digest_lookups(self) -> int:
        return self.calls["get_by_digest"]

    def pause_digest_reads(self) -> None:
        self._pause_armed = True
        self.read_done = asyncio.Event()
        self._released = asyncio.Event()

    def release(self) -> None:
        self._pause_armed = False
        self._released.set()

    def _enter(self, method: str) -> None:
        self.calls[method] += 1
        if self.unavailable:
            raise RepositoryUnavailable("database unreachable (test)")

    async def add(self, record: ApiKeyRecord, *, actor: AuditActor = OPERATOR) -> None:
        self._enter("add")
        await self.inner.add(record, actor=actor)

    async def get_by_digest(self, digest: str) -> ApiKeyRecord | None:
        self._enter("get_by_digest")
        record = await self.inner.get_by_digest(digest)
        if self._pause_armed:
            self.read_done.set()
            await self._released.wait()
        return record

    async def get_by_prefix(self, prefix: str) -> ApiKeyRecord | None:
        self._enter("get_by_prefix")
        return await self.inner.get_by_prefix(prefix)

    async def list_keys(self, **query: Any) -> list[ApiKeyRecord]:
        self._enter("list_keys")
        return await self.inner.list_keys(**query)

    async def has_active_admin(self, now: datetime) -> bool:
        self._enter("has_active_admin")
        return await self.inner.has_active_admin(now)

    async def revoke(
        self, prefix: str, at: datetime, *, actor: AuditActor = OPERATOR
    ) -> Revocation | None:
        self._enter("revoke")
        return await self.inner.revoke(prefix, at, actor=actor)

    async def rotate(
        self,
        prefix: str,
        successor: ApiKeyRecord,
        grace_until: datetime,
        now: datetime,
        *,
        actor: AuditActor = OPERATOR,
    ) -> Rotation:
        self._enter("rotate")
        return await self.inner.rotate(prefix, successor, grace_until, now, actor=actor)

    async def record_finality(self, audit_id: int, how: str) -> None:
        self._enter("record_finality")
        await self.inner.record_finality(audit_id, how)

    async def list_audit(self, **query: Any) -> list[AuditEntry]:
        self._enter("list_audit")
        return await self.inner.list_audit(**query)

    async def ping(self) -> None:
        self._enter("ping")
        await self.inner.ping()


class CountingCache:
    """Wraps a cache backend and counts every call by method name."""

    def __init__(self, inner: CoherentCacheBackend) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    async def get(self, cache_key: str) -> SimpleNamespace | None:
        self.calls["get"] += 1
        return await self.inner.get(cache_key)

    async def set(self, cache_key: str, value: SimpleNamespace, ttl_seconds: int) -> None:
        self.calls["set"] += 1
        await self.inner.set(cache_key, value, ttl_seconds)

    async def add(self, cache_key: str, value: SimpleNamespace, ttl_seconds: int) -> bool:
        self.calls["add"] += 1
        return await self.inner.add(cache_key, value, ttl_seconds)

    async def invalidate(
        self, cache_key: str, replacement: SimpleNamespace | None, ttl_seconds: int
    ) -> InvalidationReport:
        self.calls["invalidate"] += 1
        return await self.inner.invalidate(cache_key, replacement, ttl_seconds)

    async def delete(self, cache_key: str) -> None:
        self.calls["delete"] += 1
        await self.inner.delete(cache_key)

    async def clear(self) -> None:
        self.calls["clear"] += 1
        await self.inner.clear()


class OverwritingFills(CountingCache):
    """A backend whose fill is a plain ``SET``: the cache-aside race left open, as a control."""

    async def add(self, cache_key: str, value: SimpleNamespace, ttl_seconds: int) -> bool:
        self.calls["add"] += 1
        await self.inner.set(cache_key, value, ttl_seconds)
        return True


class ManualClock:
    """A monotonic clock for the circuit breaker that only moves when the test says so."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def wait_until(condition: Callable[[], bool], within_seconds: float = 10.0) -> None:
    """Yield to the loop until ``condition()`` holds; fail after ``within_seconds``."""
    deadline = time.monotonic() + within_seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the deadline")
        await asyncio.sleep(0.001)


async def timed(call: Callable[[], Awaitable[object]]) -> tuple[object | BaseException, float]:
    """Run ``call`` and return (its result or the exception it raised, elapsed seconds)."""
    started = time.monotonic()
    outcome: object | BaseException
    try:
        outcome = await call()
    except Exception as exc:
        outcome = exc
    return outcome, time.monotonic() - started
