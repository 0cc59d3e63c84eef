"""``InMemoryApiKeyCacheBackend``: the per-process dict of the documented module.

A hit is a dict lookup, but each process has its own copy: what keeps a revocation final across
processes is the service layer above (see ``app.services.apikey_service``), not this class.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from app.services.bounded_ttl_map import BoundedTtlMap
from app.services.cache_protocol import InvalidationReport, LocalView


def _entry(value: SimpleNamespace) -> SimpleNamespace:
    """A private copy, so a caller mutating what it passed or got cannot change the cache."""
    return SimpleNamespace(apiKey=value.apiKey, active=bool(value.active))


class InMemoryApiKeyCacheBackend:
    """Per-process cache: a dict with monotonic-clock expiry and lazy eviction.

    It is bounded (least-recently-used entries go first beyond ``max_entries``) so that a
    process serving many keys cannot grow without limit. The asyncio lock is created lazily, on
    first use inside a running loop, and ``sync_clear`` drops it: a test that runs the same
    instance on several event loops never meets a lock bound to another loop.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self._entries: BoundedTtlMap[str, SimpleNamespace] = BoundedTtlMap(max_entries)
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        # The synchronous lookup for the request path is the map's own: the stored value itself,
        # not a copy (callers treat it as read-only; ``get`` hands out copies). No lock: the
        # dict is only touched from the event-loop thread.
        self.peek = self._entries.get
        self.peek_item = self._entries.peek_item
        self.touch = self._entries.touch
        self.local_view: LocalView = self

    def _get_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock = asyncio.Lock()
            self._lock_loop = loop
        return self._lock

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def max_entries(self) -> int:
        return self._entries.max_entries

    def remaining_ttl(self, cache_key: str) -> float | None:
        """Seconds the entry has left, or ``None`` when absent or expired."""
        return self._entries.remaining_seconds(cache_key)

    def put(self, cache_key: str, value: SimpleNamespace, ttl_seconds: float) -> None:
        """Synchronous insert with LRU eviction; a no-op for ``ttl_seconds <= 0``."""
        self._entries.put(cache_key, _entry(value), ttl_seconds)

    async def get(self, cache_key: str) -> SimpleNamespace | None:
        value = self.peek(cache_key)
        return None if value is None else _entry(value)

    async def set(self, cache_key: str, value: SimpleNamespace, ttl_seconds: int) -> None:
        async with self._get_lock():
            self.put(cache_key, value, ttl_seconds)

    async def add(self, cache_key: str, value: SimpleNamespace, ttl_seconds: int) -> bool:
        """Store only when no live entry exists; ``True`` when stored."""
        if ttl_seconds <= 0:
            return False
        async with self._get_lock():
            if self.peek(cache_key) is not None:
                return False
            self.put(cache_key, value, ttl_seconds)
            return True

    async def invalidate(
        self, cache_key: str, replacement: SimpleNamespace | None, ttl_seconds: int
    ) -> InvalidationReport:
        """Replace this process's copy; other processes learn of it from the service layer."""
        async with self._get_lock():
            self._entries.pop(cache_key)
            if replacement is not None:
                self.put(cache_key, replacement, ttl_seconds)
        return InvalidationReport(
            confirmed=True, scope="process", detail="this worker only; others within the TTL"
        )

    async def delete(self, cache_key: str) -> None:
        async with self._get_lock():
            self._entries.pop(cache_key)

    def evict_local(self, cache_key: str | None) -> None:
        """Drop one entry (``None``: all of them) now, without the lock: for the event log."""
        if cache_key is None:
            self._entries.clear()
        else:
            self._entries.pop(cache_key)

    def sync_clear(self) -> None:
        """Empty the store now and forget the lock (it may belong to a loop that is gone)."""
        self._entries.clear()
        self._lock = None
        self._lock_loop = None

    async def clear(self) -> None:
        self.sync_clear()
