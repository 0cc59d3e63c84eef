"""What a key-lookup cache is: the documented protocol and what the service needs beyond it.

``ApiKeyCacheBackend`` is the documented contract (re-exported by
``app.services.apikey_cache_backend``). Closing the cache-aside race takes two more operations,
declared by ``CoherentCacheBackend``: a fill that only adds when nothing is cached (so it cannot
overwrite a revocation), and an invalidation that replaces every cached copy (leaving a
short-lived "revoked" tombstone behind) and says how far it reached. ``ProcessLocalPeek`` marks
the backends that can answer a hit from process memory without any await.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Literal, Protocol, runtime_checkable

InvalidationScope = Literal["process", "shared", "all-workers"]


@dataclass(frozen=True, slots=True)
class InvalidationReport:
    """How far an invalidation reached.

    ``confirmed`` means every copy the backend is responsible for was replaced: the local dict
    for ``memory``, the shared keyspace for ``redis``, and for ``tiered`` also the L1 of every
    live subscriber (``acknowledged`` out of ``expected``).
    """

    confirmed: bool
    scope: InvalidationScope
    detail: str = ""
    acknowledged: int | None = None
    expected: int | None = None


class ApiKeyCacheBackend(Protocol):
    """What every key-lookup cache offers; values are ``SimpleNamespace(apiKey, active)``."""

    async def get(self, cache_key: str) -> SimpleNamespace | None: ...

    async def set(self, cache_key: str, value: SimpleNamespace, ttl_seconds: int) -> None: ...

    async def delete(self, cache_key: str) -> None: ...

    async def clear(self) -> None: ...


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

    peek: Callable[[str], SimpleNamespace | None]
