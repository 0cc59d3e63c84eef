"""The key repository contract: the database is the source of truth for every key.

Only the sha256 digest of a key is stored; the plaintext exists once, in the creation response.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

# Where a key stands in listing order: (created_at, prefix), unique and never changing.
KeyPosition = tuple[datetime, str]


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """One stored key. ``digest`` is internal: never put it in a response or a log line."""

    prefix: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    digest: str = field(default="", repr=False)

    def is_active(self, now: datetime) -> bool:
        """Not revoked and not expired at ``now`` (an aware UTC datetime)."""
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or now < self.expires_at


class ApiKeyRepository(Protocol):
    """Database access for keys. Every method raises ``RepositoryUnavailable`` on outage."""

    async def add(self, record: ApiKeyRecord) -> None:
        """Insert a new key; ``DuplicateKey`` when its prefix or digest exists."""
        ...

    async def get_by_digest(self, digest: str) -> ApiKeyRecord | None: ...

    async def get_by_prefix(self, prefix: str) -> ApiKeyRecord | None: ...

    async def list_keys(
        self,
        *,
        limit: int,
        after: KeyPosition | None = None,
        active_at: datetime | None = None,
        name_prefix: str | None = None,
    ) -> list[ApiKeyRecord]:
        """At most ``limit`` keys in (created_at, prefix) order, strictly after ``after``.

        ``active_at``: only keys neither revoked nor expired at that instant. ``name_prefix``:
        only names starting with it, taken literally (``%`` and ``_`` are not wildcards) and
        case-sensitively. Each call is one bounded, indexed read however large the table is.
        """
        ...

    async def has_active_admin(self, now: datetime) -> bool:
        """Whether a key with the ``admin`` scope is neither revoked nor expired at ``now``."""
        ...

    async def revoke(self, prefix: str, at: datetime) -> ApiKeyRecord | None:
        """Mark revoked (idempotent: the first revocation time is kept); ``None`` if unknown."""
        ...

    async def set_expiry(self, prefix: str, expires_at: datetime) -> ApiKeyRecord | None:
        """Bring the expiry forward to ``expires_at`` (never extend it); ``None`` if unknown."""
        ...

    async def ping(self) -> None:
        """Raise ``RepositoryUnavailable`` unless the database answers."""
        ...
