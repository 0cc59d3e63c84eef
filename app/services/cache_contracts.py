"""What the key service needs from a cache beyond the documented ``ApiKeyCacheBackend``.

Closing the cache-aside race takes two more operations: a fill that only adds when nothing is
cached (so it cannot overwrite a revocation), and an invalidation that replaces every cached copy
(leaving a short-lived "revoked" tombstone behind) and says how far it reached.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Protocol, runtime_checkable

from app.services.apikey_cache_backend import ApiKeyCacheBackend
from app.services.invalidation import InvalidationReport

__all__ = ["CoherentCacheBackend", "InvalidationReport"]


class CoherentCacheBackend(ApiKeyCacheBackend, Protocol):
    """A cache backend the service can fill and invalidate without the cache-aside race."""

    async def add(self, cache_key: str, value: SimpleNamespace, ttl_seconds: int) -> bool:
        """Store only when no live entry exists (``SET NX``); ``True`` when stored."""
        ...

    async def invalidate(
        self, cache_key: str, replacement: SimpleNamespace | None, ttl_seconds: int
    ) -> InvalidationReport:
        """Replace every cached copy with ``replacement`` (or remove it when ``None``).

        Raises when the invalidation could not be carried out; never swallows the failure.
        """
        ...


@runtime_checkable
class ProcessLocalPeek(Protocol):
    """A backend that can answer some hits from this process's memory without any I/O.

    ``peek`` returns the value only when it is in process memory and may be trusted (for the
    tiered backend: while its invalidation listener is healthy); otherwise ``None``, and the
    caller takes the ordinary ``get`` path. The service uses it to keep a hit free of awaits.
    """

    def peek(self, cache_key: str) -> SimpleNamespace | None: ...
