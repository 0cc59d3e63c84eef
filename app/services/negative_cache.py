"""A bounded, short-lived memory of keys the database does not know.

Kept apart from the positive cache so that a flood of well-formed random keys can neither reach
the database on every request nor evict the entries of real keys (the lesson of mlcache's
``neg_ttl``). Only digests are stored.

A lookup that read "unknown" just before the key was created must not record that afterwards, or
the new key would be refused for a whole TTL. ``generation`` moves on every ``discard`` and
``clear``; a loader reads it before its database read and passes it to ``add``, which then
declines when anything was discarded in between.
"""

from __future__ import annotations

from app.services.bounded_ttl_map import BoundedTtlMap


class NegativeCache:
    """A per-process LRU set with a TTL on the monotonic clock."""

    def __init__(self, ttl_seconds: float, max_entries: int) -> None:
        self._ttl = ttl_seconds
        self._entries: BoundedTtlMap[str, bool] = BoundedTtlMap(max_entries)
        self._generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, cache_key: object) -> bool:
        return isinstance(cache_key, str) and self._entries.get(cache_key) is not None

    @property
    def generation(self) -> int:
        """Changes whenever an entry may have been withdrawn (a key was created, or a clear)."""
        return self._generation

    def add(self, cache_key: str, *, read_at_generation: int | None = None) -> None:
        """Remember ``cache_key`` as unknown, unless a discard happened since the caller's read."""
        if self._ttl <= 0:
            return
        if read_at_generation is not None and read_at_generation != self._generation:
            return
        self._entries.put(cache_key, True, self._ttl)

    def discard(self, cache_key: str) -> None:
        self._generation += 1
        self._entries.pop(cache_key)

    def clear(self) -> None:
        self._generation += 1
        self._entries.clear()
