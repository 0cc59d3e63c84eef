"""One bounded map with per-entry expiry and least-recently-used eviction.

Every process-local store of the service is one of these: the in-memory cache backend, the
tiered L1, the negative cache and the key service's record memo. Each is bounded (a process
serving many keys, or a flood of random ones, cannot grow without limit) and each expires
entries lazily on the monotonic clock (an expired entry is removed when a lookup finds it).

``get`` is the hot path of every cache hit, so it is kept to one dict lookup, one clock read and
one ``move_to_end``; callers hand the bound method itself to the request path (no wrapper call).
``peek_item`` is the dict's own lookup and ``touch`` its own ``move_to_end``: a hot path that
judges expiry at a clock reading of its own, or keeps no order at all (the record memo), reads
with them and runs no Python frame of the map's (see ``ApiKeyService.admit_from_memory``).
Everything here runs on the event-loop thread, so no lock is needed.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

NEVER = math.inf
"""An expiry for entries that live until evicted (the record memo)."""

_monotonic = time.monotonic


class BoundedTtlMap(Generic[K, V]):
    """Bounded LRU with monotonic-clock expiry; see the module docstring for why."""

    __slots__ = ("_entries", "_expiring", "_max_entries", "get", "peek_item", "touch")

    def __init__(self, max_entries: int, *, expiring: bool = True) -> None:
        """``expiring=False``: entries live until evicted (the record memo), and ``get`` saves
        the clock read it would otherwise make on every hit."""
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._expiring = expiring
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        # The lookup as a closure over the dict: one call, no attribute look-ups, on every hit.
        self.get: Callable[[K], V | None] = self._make_get()
        # The stored item itself, ``(expires_at, value)``: not marked recently used, its expiry
        # not judged (``NEVER`` in a map without expiry). The dict's own ``get``, so a caller
        # pays one C call and no Python frame.
        self.peek_item: Callable[[K], tuple[float, V] | None] = self._entries.get
        # Marks ``key`` recently used (it must be present): the dict's own ``move_to_end``, for a
        # caller that read an item with ``peek_item`` and judged it live itself.
        self.touch: Callable[[K], None] = self._entries.move_to_end

    def _make_get(self) -> Callable[[K], V | None]:
        entries = self._entries
        lookup = entries.get
        touch = entries.move_to_end
        monotonic = _monotonic

        if not self._expiring:

            def get_unexpiring(key: K) -> V | None:
                """The value under ``key`` (marked recently used), else ``None``."""
                item = lookup(key)
                if item is None:
                    return None
                touch(key)
                return item[1]

            return get_unexpiring

        def get(key: K) -> V | None:
            """The live value under ``key`` (marked recently used), else ``None``."""
            item = lookup(key)
            if item is None:
                return None
            if item[0] <= monotonic():
                del entries[key]
                return None
            touch(key)
            return item[1]

        return get

    @property
    def max_entries(self) -> int:
        return self._max_entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._entries))

    def remaining_seconds(self, key: K) -> float | None:
        """Seconds the entry has left, or ``None`` when absent or expired."""
        item = self._entries.get(key)
        if item is None:
            return None
        left = item[0] - _monotonic()
        return left if left > 0 else None

    def put(self, key: K, value: V, ttl_seconds: float = NEVER) -> None:
        """Store ``value`` for ``ttl_seconds``; a no-op for ``ttl_seconds <= 0``."""
        if ttl_seconds <= 0:
            return
        self.put_until(key, value, _monotonic() + ttl_seconds)

    def put_until(self, key: K, value: V, expires_at: float) -> None:
        """Store ``value`` until the monotonic instant ``expires_at``, evicting the oldest."""
        if not self._expiring and expires_at != NEVER:
            raise ValueError("this map's entries live until evicted: it takes no expiry")
        entries = self._entries
        entries[key] = (expires_at, value)
        entries.move_to_end(key)
        while len(entries) > self._max_entries:
            entries.popitem(last=False)

    def pop(self, key: K) -> V | None:
        """Remove ``key``; its value (live or not) or ``None``."""
        item = self._entries.pop(key, None)
        return None if item is None else item[1]

    def clear(self) -> None:
        self._entries.clear()
