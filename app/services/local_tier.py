"""The per-process first tier (L1) of the tiered key cache.

A bounded LRU of ``(apiKey, active)`` values with monotonic-clock expiry, plus the two pieces of
state that make it safe to sit in front of a shared cache:

* ``trusted`` — true only while the invalidation listener is subscribed (it calls
  ``mark_trusted`` and ``mark_untrusted``). The hit path consults the L1 only when it is true;
  while it is false the L1 is bypassed (and used only as a last resort when the shared tier
  cannot be reached at all).
* fill tickets — a fill records the invalidation epoch when its shared-tier read starts; an
  eviction of the same key (or a flush) that happens while the read is in flight bumps the epoch,
  and the fill is then dropped. Without it an invalidation that overtakes a slow read would be
  undone when the read completes, and the revoked value would live on in this process.

Everything here is synchronous and touched only from the event-loop thread, so no lock is needed
and a hit is a dict lookup.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType, SimpleNamespace

from app.services.bounded_ttl_map import BoundedTtlMap

_monotonic = time.monotonic


def _nothing(cache_key: str) -> SimpleNamespace | None:
    """``peek`` of an untrusted L1: never an answer."""
    return None


_NOTHING_STORED: Mapping[str, tuple[float, SimpleNamespace]] = MappingProxyType({})
"""What an untrusted L1 shows the request path (``peek_item``): an empty mapping that cannot
be filled, whose ``get`` answers ``None`` in C, without a Python frame."""


@dataclass(frozen=True, slots=True)
class FillTicket:
    """Taken before a shared-tier read; says whether the result may still go into the L1."""

    epoch: int
    started_at: float


class LocalTier:
    """Bounded LRU with expiry and fill tickets; see the module docstring for why."""

    def __init__(self, max_entries: int, max_ttl_seconds: float) -> None:
        if max_ttl_seconds < 0:
            raise ValueError("max_ttl_seconds must not be negative")
        self._max_ttl = float(max_ttl_seconds)
        # ``peek`` hands out the stored value itself, so the request path allocates nothing;
        # ``lookup`` hands out copies.
        self._entries: BoundedTtlMap[str, SimpleNamespace] = BoundedTtlMap(max_entries)
        self._get = self._entries.get
        self.peek: Callable[[str], SimpleNamespace | None] = _nothing
        self.peek_item: Callable[[str], tuple[float, SimpleNamespace] | None] = _NOTHING_STORED.get
        self.touch: Callable[[str], None] = self._entries.touch
        self._trusted = False
        self._epoch = 0
        self._flushed_at = 0
        self._reads_in_flight: dict[str, int] = {}
        self._evicted_at: dict[str, int] = {}
        # Told of every eviction (a key) and flush (``None``), so that whoever shares one read
        # among several callers can stop handing out a result the eviction made stale.
        self.on_evict: Callable[[str | None], None] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def trusted(self) -> bool:
        return self._trusted

    @trusted.setter
    def trusted(self, value: bool) -> None:
        # ``peek`` is swapped with the flag, so the hit path makes one call and no test: the
        # map's own lookup while trusted, an answer of "nothing here" otherwise.
        self._trusted = value
        self.peek = self._get if value else _nothing
        self.peek_item = self._entries.peek_item if value else _NOTHING_STORED.get

    @property
    def max_entries(self) -> int:
        return self._entries.max_entries

    @property
    def max_ttl_seconds(self) -> float:
        return self._max_ttl

    def lookup(self, cache_key: str) -> SimpleNamespace | None:
        """A live entry as a fresh namespace (callers may mutate it), else ``None``."""
        value = self._get(cache_key)
        return None if value is None else SimpleNamespace(apiKey=value.apiKey, active=value.active)

    def begin_fill(self, cache_key: str) -> FillTicket:
        self._reads_in_flight[cache_key] = self._reads_in_flight.get(cache_key, 0) + 1
        return FillTicket(epoch=self._epoch, started_at=_monotonic())

    def end_fill(
        self,
        cache_key: str,
        ticket: FillTicket,
        value: SimpleNamespace | None,
        shared_ttl_seconds: float,
    ) -> bool:
        """Release ``ticket``; store ``value`` when nothing invalidated it meanwhile.

        The entry expires at ``min(shared TTL, max L1 TTL)`` counted from when the read
        *started*, so it can never outlive the shared entry it copies. ``True`` when stored.
        """
        allowed = (
            self.trusted
            and self._flushed_at <= ticket.epoch
            and self._evicted_at.get(cache_key, 0) <= ticket.epoch
        )
        remaining = self._reads_in_flight.get(cache_key, 1) - 1
        if remaining > 0:
            self._reads_in_flight[cache_key] = remaining
        else:
            self._reads_in_flight.pop(cache_key, None)
            self._evicted_at.pop(cache_key, None)
        ttl = min(shared_ttl_seconds, self._max_ttl)
        if not allowed or value is None or ttl <= 0:
            return False
        stored = SimpleNamespace(apiKey=value.apiKey, active=bool(value.active))
        self._entries.put_until(cache_key, stored, ticket.started_at + ttl)
        return True

    def evict(self, cache_key: str) -> None:
        """Drop one entry and void every fill of it that is still in flight."""
        self._epoch += 1
        if cache_key in self._reads_in_flight:
            self._evicted_at[cache_key] = self._epoch
        self._entries.pop(cache_key)
        if self.on_evict is not None:
            self.on_evict(cache_key)

    def flush(self) -> None:
        """Drop every entry and void every fill in flight."""
        self._epoch += 1
        self._flushed_at = self._epoch
        self._entries.clear()
        if self.on_evict is not None:
            self.on_evict(None)

    # -- what the invalidation listener calls -------------------------------------------------

    def apply_invalidation(self, cache_key: str | None) -> None:
        """An invalidation heard on the channel: evict one key, or flush for ``None``."""
        if cache_key is None:
            self.flush()
        else:
            self.evict(cache_key)

    def mark_trusted(self) -> None:
        """Subscribed (again): whatever was published meanwhile is lost, so start empty."""
        self.flush()
        self.trusted = True

    def mark_untrusted(self) -> None:
        """The channel is lost: bypass the L1 until the next subscription."""
        self.trusted = False
