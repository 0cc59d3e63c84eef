"""``tiered``: memory-speed hits, and revocations that reach every worker before revoke returns.

A bounded per-process L1 (``LocalTier``) in front of the shared Redis backend (L2, behind the
circuit breaker), kept coherent by the invalidation channel (``InvalidationListener``):

* a hit is a dict lookup in the L1 — no await on Redis, no lock — taken only while the listener
  is subscribed (``LocalTier.trusted``);
* a miss reads the value *and its remaining TTL* from the L2 in one round trip and copies it into
  the L1 for ``min(remaining L2 TTL, APIKEY_CACHE_L1_TTL_SECONDS)``, unless an invalidation of
  that key overtook the read (fill tickets);
* ``set``, ``delete``, ``clear`` and ``invalidate`` write the L2 first, then PUBLISH; every
  subscriber evicts and acknowledges. ``invalidate`` waits up to the ack timeout for as many
  acks as PUBLISH reported receivers and says how many came.

While the listener is not subscribed the L1 is bypassed and the L2 answers. Only when the L2
cannot be reached either does the L1 answer — with entries filled while the listener was
subscribed and still within their TTL — and everything else goes to the database, as with the
``redis`` backend. That is the one window in which a revocation may be missed: if this process
cannot reach Redis but others can, a revoke elsewhere is confirmed without it, and its copy lives
up to the L1 TTL. When nobody can reach Redis, revoke fails loudly instead.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

from app.services.cache_protocol import InvalidationReport, LocalView
from app.services.guarded_cache_backend import CircuitBreakingCacheBackend
from app.services.invalidation_listener import AckCount, InvalidationListener
from app.services.local_tier import LocalTier
from app.services.redis_cache_backend import RedisApiKeyCacheBackend
from app.services.single_flight import SingleFlight

logger = logging.getLogger(__name__)

INVALIDATION_CHANNEL_SUFFIX = "invalidate"


class TieredApiKeyCacheBackend:
    """Per-process L1 over the shared L2, coherent through Redis pub/sub (module docstring).

    Every collaborator is given: ``shared`` (the breaker around the L2), ``l2`` (the Redis
    backend it guards, for the read that also returns the remaining TTL), ``l1`` and the
    ``listener`` that keeps it coherent (``app.services.cache_factories.tiered_cache`` wires
    the listener's callbacks to the L1).
    """

    def __init__(
        self,
        shared: CircuitBreakingCacheBackend,
        l2: RedisApiKeyCacheBackend,
        l1: LocalTier,
        listener: InvalidationListener,
        *,
        ack_timeout_ms: int = 500,
    ) -> None:
        if ack_timeout_ms < 1:
            raise ValueError("ack_timeout_ms must be at least 1")
        self._shared = shared
        self._l2 = l2
        self._ack_timeout = ack_timeout_ms / 1000.0
        self._l1 = l1
        self.local_view: LocalView = l1
        # Concurrent L1 misses of one key share one L2 read: a storm of first requests would
        # otherwise queue a read per request on the bounded pool and time out waiting for it.
        self._l2_reads: SingleFlight[str, SimpleNamespace | None] = SingleFlight()
        self._l1.on_evict = self._forget_shared_read
        self._listener = listener

    @property
    def shared(self) -> CircuitBreakingCacheBackend:
        return self._shared

    @property
    def member_id(self) -> str:
        """This process's id on the invalidation channel (and so in the members registry)."""
        return self._listener.listener_id

    def evict_local(self, cache_key: str | None) -> None:
        """Drop this process's L1 copy (``None``: all of it), as the event log asks."""
        self._l1.apply_invalidation(cache_key)

    async def write_tombstone(
        self, cache_key: str, replacement: SimpleNamespace | None, ttl_seconds: int
    ) -> None:
        """Replace the L2 entry only: every process applies the event log to its own L1."""
        await self._shared.invalidate(cache_key, replacement, ttl_seconds)
        self._l1.evict(cache_key)

    async def read_shared(self, cache_key: str) -> SimpleNamespace | None:
        """The L2 value, bypassing the L1 entirely (also as a fallback)."""
        result = await self._read_l2(cache_key)
        return None if result is None else result[0]

    @property
    def l1(self) -> LocalTier:
        return self._l1

    @property
    def listener(self) -> InvalidationListener:
        return self._listener

    @property
    def local_entries(self) -> int:
        return len(self._l1)

    @property
    def l1_ttl_seconds(self) -> float:
        return self._l1.max_ttl_seconds

    @property
    def l1_max_entries(self) -> int:
        return self._l1.max_entries

    @property
    def ack_timeout_seconds(self) -> float:
        return self._ack_timeout

    async def wait_ready(self, timeout_seconds: float) -> bool:
        """Start the listener (if needed) and wait until the L1 may be trusted."""
        return await self._listener.wait_healthy(timeout_seconds)

    async def aclose(self) -> None:
        """Stop the listener; the app lifespan calls this on shutdown."""
        await self._listener.aclose()

    # -- reads and fills ----------------------------------------------------------------------

    def peek(self, cache_key: str) -> SimpleNamespace | None:
        """The L1 entry, only while the L1 is trusted; no I/O (see ``ProcessLocalPeek``)."""
        return self._l1.peek(cache_key)

    async def get(self, cache_key: str) -> SimpleNamespace | None:
        l1 = self._l1
        if l1.trusted:
            value = l1.lookup(cache_key)
            if value is not None:
                return value
        return await self._read_through(cache_key)

    async def _read_through(self, cache_key: str) -> SimpleNamespace | None:
        self._listener.ensure_running()
        return await self._l2_reads.run(cache_key, lambda: self._read_through_once(cache_key))

    def _forget_shared_read(self, cache_key: str | None) -> None:
        """A read in flight before an eviction may carry the evicted value: later callers
        start a fresh one (those already waiting began before the eviction)."""
        if cache_key is None:
            self._l2_reads.forget_all()
        else:
            self._l2_reads.forget(cache_key)

    async def _read_through_once(self, cache_key: str) -> SimpleNamespace | None:
        l1 = self._l1
        if not l1.trusted:
            result = await self._read_l2(cache_key)
            if result is None:
                # Redis unreachable: an entry filled while we were subscribed beats the
                # database only in that it still exists; it is within its TTL by lookup().
                return l1.lookup(cache_key)
            return result[0]
        ticket = l1.begin_fill(cache_key)
        result = None
        try:
            result = await self._read_l2(cache_key)
        finally:
            value, ttl = result if result is not None else (None, 0.0)
            l1.end_fill(cache_key, ticket, value, ttl)
        return None if result is None else result[0]

    async def _read_l2(self, cache_key: str) -> tuple[SimpleNamespace | None, float] | None:
        """``(value, remaining TTL)``, or ``None`` when the L2 cannot be reached."""
        return await self._shared.attempt(lambda: self._l2.get_with_ttl(cache_key), None)

    async def add(self, cache_key: str, value: SimpleNamespace, ttl_seconds: int) -> bool:
        """``SET NX`` in the L2; on success this process keeps a copy in its L1.

        No broadcast is needed: no other L1 can hold the key, since an L1 entry never outlives
        the L2 entry it copies and the L2 had none.
        """
        if ttl_seconds <= 0:
            return False
        self._listener.ensure_running()
        ticket = self._l1.begin_fill(cache_key)
        stored = False
        try:
            stored = await self._shared.add(cache_key, value, ttl_seconds)
        finally:
            self._l1.end_fill(cache_key, ticket, value if stored else None, float(ttl_seconds))
        return stored

    # -- writes that must reach every L1 ------------------------------------------------------

    async def set(self, cache_key: str, value: SimpleNamespace, ttl_seconds: int) -> None:
        """Overwrite in the L2 and evict everywhere.

        Like the ``redis`` backend, a write the L2 cannot take degrades to nothing; but once it
        is taken, failing to tell the other workers raises, since their copies are now stale.
        """
        if ttl_seconds <= 0:
            return
        self._listener.ensure_running()
        written = await self._shared.attempt(
            lambda: self._write_l2(cache_key, value, ttl_seconds), False
        )
        self._l1.evict(cache_key)
        if written:
            await self._broadcast(cache_key, "set")

    async def _write_l2(self, cache_key: str, value: SimpleNamespace, ttl_seconds: int) -> bool:
        await self._l2.set(cache_key, value, ttl_seconds)
        return True

    async def delete(self, cache_key: str) -> None:
        self._listener.ensure_running()
        await self._shared.delete(cache_key)
        self._l1.evict(cache_key)
        await self._broadcast(cache_key, "delete")

    async def clear(self) -> None:
        self._listener.ensure_running()
        await self._shared.clear()
        self._l1.flush()
        await self._broadcast(None, "clear")

    async def invalidate(
        self, cache_key: str, replacement: SimpleNamespace | None, ttl_seconds: int
    ) -> InvalidationReport:
        """Replace the L2 entry, then wait (bounded) until every subscriber evicted its copy.

        Raises ``CacheUnavailable`` when the L2 write or the PUBLISH fails; a subscriber that
        does not acknowledge in time is reported (``confirmed=False``), never waited for longer.
        """
        self._listener.ensure_running()
        await self._shared.invalidate(cache_key, replacement, ttl_seconds)
        self._l1.evict(cache_key)
        acks = await self._listener.broadcast(cache_key, timeout_seconds=self._ack_timeout)
        return InvalidationReport(
            confirmed=acks.complete,
            scope="all-workers",
            detail=self._describe(acks),
            acknowledged=acks.acknowledged,
            expected=acks.expected,
            acknowledged_by=acks.by,
        )

    async def _broadcast(self, cache_key: str | None, operation: str) -> None:
        acks = await self._listener.broadcast(cache_key, timeout_seconds=self._ack_timeout)
        if not acks.complete:
            logger.warning("API-key cache %s: %s", operation, self._describe(acks))

    def _describe(self, acks: AckCount) -> str:
        if acks.complete:
            return f"evicted by {acks.acknowledged}/{acks.expected} subscribed processes"
        if not acks.listening:
            return (
                f"published to {acks.expected} processes, but this one is not subscribed "
                "and cannot count their acknowledgements"
            )
        return (
            f"only {acks.acknowledged}/{acks.expected} subscribed processes acknowledged within "
            f"{self._ack_timeout * 1000:.0f}ms; the others may hold a copy until they next "
            "read the channel or re-subscribe"
        )
