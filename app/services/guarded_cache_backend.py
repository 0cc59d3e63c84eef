"""A cache behind a circuit breaker and a per-call deadline, so Redis trouble never fails a key.

The deadline (``operation_timeout_seconds``) is enforced by ``call_deadlines``: a call is cut
between its deadline and a quarter of it later (at most 50 ms), for a fraction of what
``asyncio.timeout`` costs per call.

Two kinds of call, one name each:

* ``attempt`` — reads and fills degrade: a failure, a timeout or an open circuit gives the
  caller's fallback (a miss), and the request goes to the database. At most one failed call per
  request is waited for (``cache_budget``).
* ``require`` — invalidations never degrade silently: they are always tried, and a failure
  raises ``CacheUnavailable`` so that revoke can tell its caller.

The protocol's operations map onto them: ``get``/``set``/``add`` attempt, ``invalidate``/
``delete``/``clear`` require.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import TypeVar

from app.domain.errors import CacheUnavailable
from app.services.cache_budget import budget_spent, spend_budget
from app.services.cache_protocol import CoherentCacheBackend, InvalidationReport
from app.services.call_deadlines import CallDeadlines
from app.services.circuit_breaker import CircuitBreaker
from app.services.metrics import CacheMetrics

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_DEADLINE_RESOLUTION_SECONDS = 0.05


def deadline_resolution(timeout_seconds: float) -> float:
    """How late past its deadline a call may be cut: a quarter of it, at most 50 ms."""
    return min(timeout_seconds / 4, MAX_DEADLINE_RESOLUTION_SECONDS)


class CircuitBreakingCacheBackend:
    """Wraps a ``CoherentCacheBackend`` with a per-call timeout and a ``CircuitBreaker``."""

    def __init__(
        self,
        inner: CoherentCacheBackend,
        breaker: CircuitBreaker,
        *,
        operation_timeout_seconds: float = 0.25,
        metrics: CacheMetrics | None = None,
    ) -> None:
        self._inner = inner
        self._breaker = breaker
        self._timeout = operation_timeout_seconds
        self._deadlines = CallDeadlines(
            operation_timeout_seconds,
            resolution_seconds=deadline_resolution(operation_timeout_seconds),
        )
        self._metrics = metrics if metrics is not None else CacheMetrics()

    @property
    def inner(self) -> CoherentCacheBackend:
        return self._inner

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

    @property
    def metrics(self) -> CacheMetrics:
        return self._metrics

    @property
    def is_open(self) -> bool:
        return self._breaker.is_open

    def _failed(self, exc: Exception) -> None:
        self._metrics.cache_errors += 1
        if self._breaker.record_failure():
            self._metrics.breaker_opened += 1
            logger.warning(
                "API-key cache failing (%s): circuit open for %.1fs, using the database",
                type(exc).__name__,
                self._breaker.reset_after_seconds,
            )

    def _succeeded(self) -> None:
        if self._breaker.record_success():
            logger.info("API-key cache reachable again: circuit closed")

    async def attempt(self, operation: Callable[[], Awaitable[T]], fallback: T) -> T:
        """Run a read or fill: ``fallback`` on failure, timeout or open circuit.

        Each kind of call is written out in full rather than sharing a coroutine that both
        await: this runs on every shared-cache hit, where a coroutine level is measurable.
        """
        if budget_spent() or not self._breaker.allow():
            # This request already waited for one failed call, or the circuit is open.
            self._metrics.cache_bypassed += 1
            return fallback
        try:
            result = await self._deadlines.run(operation)
        except asyncio.CancelledError:
            self._breaker.abandon()  # the caller went away: no verdict on the cache
            raise
        except Exception as exc:
            self._failed(exc)
            spend_budget()
            return fallback
        self._succeeded()
        return result

    async def require(self, operation: Callable[[], Awaitable[T]], *, bounded: bool = True) -> T:
        """Run a call that must not be skipped; a failure raises ``CacheUnavailable``."""
        try:
            result = await (self._deadlines.run(operation) if bounded else operation())
        except asyncio.CancelledError:
            self._breaker.abandon()  # the caller went away: no verdict on the cache
            raise
        except Exception as exc:
            self._failed(exc)
            raise CacheUnavailable(f"cache unreachable ({type(exc).__name__})") from exc
        self._succeeded()
        return result

    async def get(self, cache_key: str) -> SimpleNamespace | None:
        return await self.attempt(lambda: self._inner.get(cache_key), None)

    async def set(self, cache_key: str, value: SimpleNamespace, ttl_seconds: int) -> None:
        await self.attempt(lambda: self._inner.set(cache_key, value, ttl_seconds), None)

    async def add(self, cache_key: str, value: SimpleNamespace, ttl_seconds: int) -> bool:
        return await self.attempt(lambda: self._inner.add(cache_key, value, ttl_seconds), False)

    async def invalidate(
        self, cache_key: str, replacement: SimpleNamespace | None, ttl_seconds: int
    ) -> InvalidationReport:
        return await self.require(
            lambda: self._inner.invalidate(cache_key, replacement, ttl_seconds)
        )

    async def write_tombstone(
        self, cache_key: str, replacement: SimpleNamespace | None, ttl_seconds: int
    ) -> None:
        """The shared entry replaced as by ``invalidate`` (this backend has no other tier)."""
        await self.invalidate(cache_key, replacement, ttl_seconds)

    async def delete(self, cache_key: str) -> None:
        await self.require(lambda: self._inner.delete(cache_key))

    async def clear(self) -> None:
        # A clear walks the whole prefix in bounded SCAN steps, each under the socket timeout;
        # the per-call deadline meant for the request path would cut it short.
        await self.require(self._inner.clear, bounded=False)
