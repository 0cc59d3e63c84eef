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
    acknowledged_by: frozenset[str] = frozenset()
    """The member ids that acknowledged (``tiered``), for the finality check."""


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


class LocalView(Protocol):
    """Where a process-local hit is read, with no I/O and no await.

    ``peek`` returns the value only when it is in process memory and may be trusted (for the
    tiered backend: while its invalidation listener is healthy); otherwise ``None``, and the
    caller takes the ordinary ``get`` path. Read the attribute on every use: a backend swaps it
    when trust changes (the tiered L1 does).

    ``peek_item`` and ``touch`` are the same read taken apart for the request path, so that a
    hit runs no Python frame of the cache's: ``peek_item`` is the stored ``(expires_at,
    value)`` itself (a dict's own ``get``, or, while nothing may be trusted, an empty mapping's),
    with its expiry left for the caller to judge at the monotonic instant it has read already;
    ``touch`` marks a live entry the caller used as recently used (an ``OrderedDict``'s
    ``move_to_end``). An expired item is left where it is: the ``get`` path removes it.
    """

    peek: Callable[[str], SimpleNamespace | None]
    peek_item: Callable[[str], tuple[float, SimpleNamespace] | None]
    touch: Callable[[str], None]


@runtime_checkable
class ProcessLocalPeek(Protocol):
    """A backend that can answer some hits from this process's memory (its ``local_view``)."""

    local_view: LocalView


@runtime_checkable
class LocalCopies(Protocol):
    """A backend holding copies in this process's memory, which the event log must reach."""

    def evict_local(self, cache_key: str | None) -> None:
        """Drop this process's copy of ``cache_key`` (``None``: every copy), synchronously."""
        ...


@runtime_checkable
class SharedTombstones(Protocol):
    """A backend with a shared tier that a revocation must bring in line."""

    async def write_tombstone(
        self, cache_key: str, replacement: SimpleNamespace | None, ttl_seconds: int
    ) -> None:
        """Replace (or delete, for ``None``) the shared entry only; raises on failure."""
        ...


@runtime_checkable
class SharedReader(Protocol):
    """A backend whose shared tier can be read without its process-local one."""

    async def read_shared(self, cache_key: str) -> SimpleNamespace | None: ...
