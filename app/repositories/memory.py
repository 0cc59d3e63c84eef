"""A dict-backed key repository for unit tests and for benchmarks that must not measure SQL."""

from __future__ import annotations

import dataclasses
from datetime import datetime

from app.domain.errors import DuplicateKey
from app.domain.scopes import ADMIN
from app.repositories.base import ApiKeyRecord, KeyPosition


class InMemoryApiKeyRepository:
    """Implements ``ApiKeyRepository`` in a dict; records are immutable, updates replace them."""

    def __init__(self) -> None:
        self._by_prefix: dict[str, ApiKeyRecord] = {}
        self._prefix_by_digest: dict[str, str] = {}

    async def add(self, record: ApiKeyRecord) -> None:
        if record.prefix in self._by_prefix or record.digest in self._prefix_by_digest:
            raise DuplicateKey(record.prefix)
        self._by_prefix[record.prefix] = record
        self._prefix_by_digest[record.digest] = record.prefix

    async def get_by_digest(self, digest: str) -> ApiKeyRecord | None:
        prefix = self._prefix_by_digest.get(digest)
        return None if prefix is None else self._by_prefix[prefix]

    async def get_by_prefix(self, prefix: str) -> ApiKeyRecord | None:
        return self._by_prefix.get(prefix)

    async def list_keys(
        self,
        *,
        limit: int,
        after: KeyPosition | None = None,
        active_at: datetime | None = None,
        name_prefix: str | None = None,
    ) -> list[ApiKeyRecord]:
        chosen = sorted(self._by_prefix.values(), key=lambda r: (r.created_at, r.prefix))
        if after is not None:
            chosen = [r for r in chosen if (r.created_at, r.prefix) > after]
        if active_at is not None:
            chosen = [r for r in chosen if r.is_active(active_at)]
        if name_prefix is not None:
            chosen = [r for r in chosen if r.name.startswith(name_prefix)]
        return chosen[:limit]

    async def has_active_admin(self, now: datetime) -> bool:
        return any(ADMIN in r.scopes and r.is_active(now) for r in self._by_prefix.values())

    async def revoke(self, prefix: str, at: datetime) -> ApiKeyRecord | None:
        record = self._by_prefix.get(prefix)
        if record is None:
            return None
        if record.revoked_at is None:
            record = dataclasses.replace(record, revoked_at=at)
            self._by_prefix[prefix] = record
        return record

    async def set_expiry(self, prefix: str, expires_at: datetime) -> ApiKeyRecord | None:
        record = self._by_prefix.get(prefix)
        if record is None:
            return None
        if record.expires_at is None or expires_at < record.expires_at:
            record = dataclasses.replace(record, expires_at=expires_at)
            self._by_prefix[prefix] = record
        return record

    async def ping(self) -> None:
        return None
