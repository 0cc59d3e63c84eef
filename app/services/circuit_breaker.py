"""A circuit breaker around a shared cache backend, so Redis trouble never fails a valid key.

Reads and fills degrade: a failure or a timeout is a miss and the caller goes to the database.
After ``failure_threshold`` consecutive failures the breaker opens and skips the cache entirely
for ``reset_after_seconds``; then one probe is let through, and its success closes the breaker.
Invalidations never degrade silently: they are always attempted and a failure raises
``CacheUnavailable`` so that revoke can tell its caller.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import TypeVar

from app.services.cache_budget import budget_spent, spend_budget
from app.services.cache_contracts import CoherentCacheBackend, InvalidationReport
from app.services.metrics import CacheMetrics

logger = logging.getLogger(__name__)

T = TypeVar("T")


class CacheUnavailable(Exception):
    """The cache could not carry out an operation that must not be skipped."""


class CircuitBreakingCacheBackend:
    """Wraps a ``CoherentCacheBackend`` with a per-call timeout and a circuit breaker."""

    def __init__(
        self,
        inner: CoherentCacheBackend,
        *,
        failure_threshold: int = 5,
        reset_after_seconds: float = 5.0,
        operation_timeout_seconds: float = 0.25,
        metrics: CacheMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._failure_threshold = failure_threshold
        self._reset_after = reset_after_seconds
        self._timeout = operation_timeout_seconds
        self._metrics = metrics if metrics is not None else CacheMetrics()
        self._clock = clock
        self._consecutive_failures = 0
        self._open_until: float | None = None
        self._probe_in_flight = False

    @property
    def inner(self) -> CoherentCacheBackend:
        return self._inner

    @property
    def is_open(self) -> bool:
        return self._open_until is not None

    def _admit(self) -> bool:
        """Whether a degradable call may try the cache now (closed, or the one probe)."""
        if self._open_until is None:
            return True
        if self._clock() >= self._open_until and not self._probe_in_flight:
            self._probe_in_flight = True
            return True
        self._metrics.cache_bypassed += 1
        return False

    def _record_success(self) -> None:
        if self._open_until is not None:
            logger.info("API-key cache reachable again: circuit closed")
        self._consecutive_failures = 0
        self._open_until = None
        self._probe_in_flight = False

    def _record_failure(self, exc: BaseException) -> None:
        self._metrics.cache_errors += 1
        self._consecutive_failures += 1
        self._probe_in_flight = False
        if self._open_until is not None or self._consecutive_failures >= self._failure_threshold:
            if self._open_until is None:
                self._metrics.breaker_opened += 1
                logger.warning(
                    "API-key cache failing (%s): circuit open for %.1fs, using the database",
                    type(exc).__name__,
                    self._reset_after,
                )
            self._open_until = self._clock() + self._reset_after

    async def _call(self, operation: Callable[[], Awaitable[T]], *, bounded: bool = True) -> T:
        try:
            async with asyncio.timeout(self._timeout if bounded else None):
                result = await operation()
        except asyncio.CancelledError:
            # The caller went away (a client hung up): no verdict on the cache, but the probe
            # slot must be freed, or an open circuit would never probe again.
            self._probe_in_flight = False
            raise
        except Exception as exc:
            self._record_failure(exc)
            raise
        self._record_success()
        return result

    async def _degradable(self, operation: Callable[[], Awaitable[T]], fallback: T) -> T:
        if budget_spent():
            # This request already waited for one failed call: the rest of it skips the cache.
            self._metrics.cache_bypassed += 1
            return fallback
        if not self._admit():
            return fallback
        try:
            return await self._call(operation)
        except Exception:
            spend_budget()
            return fallback

    async def _mandatory(self, operation: Callable[[], Awaitable[T]], *, bounded: bool = True) -> T:
        try:
            return await self._call(operation, bounded=bounded)
        except Exception as exc:
            raise CacheUnavailable(f"cache unreachable ({type(exc).__name__})") from exc

    async def attempt(self, operation: Callable[[], Awaitable[T]], fallback: T) -> T:
        """Run a read or fill the protocol does not name (a layer above may need more than
        ``get``), under the same deadline and breaker: ``fallback`` on failure or open circuit.
        """
        return await self._degradable(operation, fallback)

    async def require(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run a call that must not be skipped (a publish of an invalidation, say); a failure
        counts against the breaker and raises ``CacheUnavailable``.
        """
        return await self._mandatory(operation)

    async def get(self, cache_key: str) -> SimpleNamespace | None:
        return await self._degradable(lambda: self._inner.get(cache_key), None)

    async def set(self, cache_key: str, value: SimpleNamespace, ttl_seconds: int) -> None:
        await self._degradable(lambda: self._inner.set(cache_key, value, ttl_seconds), None)

    async def add(self, cache_key: str, value: SimpleNamespace, ttl_seconds: int) -> bool:
        return await self._degradable(lambda: self._inner.add(cache_key, value, ttl_seconds), False)

    async def invalidate(
        self, cache_key: str, replacement: SimpleNamespace | None, ttl_seconds: int
    ) -> InvalidationReport:
        return await self._mandatory(
            lambda: self._inner.invalidate(cache_key, replacement, ttl_seconds)
        )

    async def delete(self, cache_key: str) -> None:
        await self._mandatory(lambda: self._inner.delete(cache_key))

    async def clear(self) -> None:
        # A clear walks the whole prefix in bounded SCAN steps, each under the socket timeout;
        # the per-call deadline meant for the request path would cut it short.
        await self._mandatory(self._inner.clear, bounded=False)
