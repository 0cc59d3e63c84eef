"""A dict-backed key repository for unit tests and for benchmarks that must not measure SQL."""

from __future__ import annotations

import dataclasses
from datetime import datetime

from app.domain.errors import DuplicateKey, KeyNotActive, UnknownKeyPrefix
from app.domain.scopes import ADMIN
from app.repositories.base import (
    OPERATOR,
    ApiKeyRecord,
    AuditActor,
    AuditEntry,
    KeyEvent,
    KeyPosition,
    MemberState,
    Revocation,
    Rotation,
)


class InMemoryApiKeyRepository:
    """Implements ``ApiKeyRepository`` in a dict; records are immutable, updates replace them."""

    def __init__(self) -> None:
        self._by_prefix: dict[str, ApiKeyRecord] = {}
        self._prefix_by_digest: dict[str, str] = {}
        self._successors: dict[str, str] = {}
        self.events: list[KeyEvent] = []
        self.event_times: list[datetime] = []  # when each event occurred, by position
        self.audit: list[AuditEntry] = []

    async def add(self, record: ApiKeyRecord, *, actor: AuditActor = OPERATOR) -> None:
        self._insert(record)
        self._audit(actor, "created", record.prefix, record.created_at)

    def _insert(self, record: ApiKeyRecord) -> None:
        if record.prefix in self._by_prefix or record.digest in self._prefix_by_digest:
            raise DuplicateKey(record.prefix)
        self._by_prefix[record.prefix] = record
        self._prefix_by_digest[record.digest] = record.prefix

    def _audit(
        self,
        actor: AuditActor,
        action: str,
        target_prefix: str,
        at: datetime,
        detail: str | None = None,
    ) -> int:
        """Appended only after every check passed: nothing else can fail, as in one transaction."""
        entry = AuditEntry(
            id=len(self.audit) + 1,
            occurred_at=at,
            actor_prefix=actor.prefix,
            action=action,
            target_prefix=target_prefix,
            detail=detail,
            request_id=actor.request_id,
            finality=None,
        )
        self.audit.append(entry)
        return entry.id

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

    async def revoke(
        self, prefix: str, at: datetime, *, actor: AuditActor = OPERATOR
    ) -> Revocation | None:
        record = self._by_prefix.get(prefix)
        if record is None:
            return None
        if record.revoked_at is not None:
            previous = [event.id for event in self.events if event.prefix == prefix]
            audited = [
                entry.id
                for entry in self.audit
                if entry.target_prefix == prefix and entry.action == "revoked"
            ]
            return Revocation(
                record=record,
                event_id=max(previous, default=0),
                newly_revoked=False,
                audit_id=min(audited, default=0),
            )
        record = dataclasses.replace(record, revoked_at=at)
        self._by_prefix[prefix] = record
        return Revocation(
            record=record,
            event_id=self._log(record, "revoked", at),
            newly_revoked=True,
            audit_id=self._audit(actor, "revoked", prefix, at),
        )

    async def rotate(
        self,
        prefix: str,
        successor: ApiKeyRecord,
        grace_until: datetime,
        now: datetime,
        *,
        actor: AuditActor = OPERATOR,
    ) -> Rotation:
        old = self._by_prefix.get(prefix)
        if old is None:
            raise UnknownKeyPrefix(prefix)
        if prefix in self._successors or not old.is_active(now):
            raise KeyNotActive(prefix, self._successors.get(prefix))
        if successor.prefix in self._by_prefix or successor.digest in self._prefix_by_digest:
            raise DuplicateKey(successor.prefix)
        narrowed = (
            grace_until
            if old.expires_at is None or grace_until < old.expires_at
            else old.expires_at
        )
        new = dataclasses.replace(successor, expires_at=old.expires_at)
        self._insert(new)
        old = dataclasses.replace(old, expires_at=narrowed)
        self._by_prefix[prefix] = old
        self._successors[prefix] = new.prefix
        return Rotation(
            old=old,
            new=new,
            event_id=self._log(old, "rotated", now),
            audit_id=self._audit(actor, "rotated", prefix, now, detail=new.prefix),
        )

    def _log(self, record: ApiKeyRecord, kind: str, at: datetime) -> int:
        event = KeyEvent(
            id=len(self.events) + 1,
            prefix=record.prefix,
            kind=kind,
            shared_done=False,
            digest=record.digest,
        )
        self.events.append(event)
        self.event_times.append(at)
        return event.id

    async def record_finality(self, audit_id: int, how: str) -> None:
        if 0 < audit_id <= len(self.audit) and self.audit[audit_id - 1].finality is None:
            self.audit[audit_id - 1] = dataclasses.replace(
                self.audit[audit_id - 1], finality=how[:200]
            )

    async def list_audit(
        self, *, limit: int, before_id: int | None = None, target_prefix: str | None = None
    ) -> list[AuditEntry]:
        chosen = [
            entry
            for entry in reversed(self.audit)
            if (before_id is None or entry.id < before_id)
            and (target_prefix is None or entry.target_prefix == target_prefix)
        ]
        return chosen[:limit]

    async def ping(self) -> None:
        return None


class InMemoryEventLog:
    """Implements ``EventLogRepository`` over an ``InMemoryApiKeyRepository``'s events."""

    def __init__(self, keys: InMemoryApiKeyRepository) -> None:
        self._keys = keys
        self._members: dict[str, MemberState] = {}

    async def last_event_id(self) -> int:
        return len(self._keys.events)

    async def last_event_id_before(self, at: datetime) -> int:
        for position, occurred_at in enumerate(self._keys.event_times):
            if occurred_at >= at:
                return position  # ids are positions + 1
        return len(self._keys.events)

    async def events_after(self, event_id: int, limit: int) -> list[KeyEvent]:
        return self._keys.events[event_id : event_id + limit]

    async def event_state(self, event_id: int) -> KeyEvent | None:
        events = self._keys.events
        return events[event_id - 1] if 0 < event_id <= len(events) else None

    async def mark_shared_done(self, event_id: int, at: datetime) -> None:
        event = await self.event_state(event_id)
        if event is not None:
            self._keys.events[event_id - 1] = dataclasses.replace(event, shared_done=True)

    async def renew_member(
        self, member_id: str, description: str, applied_event_id: int, lease_until: datetime
    ) -> None:
        self._members[member_id] = MemberState(
            member_id, description, applied_event_id, lease_until
        )

    async def live_members(self, now: datetime) -> list[MemberState]:
        return [member for member in self._members.values() if member.lease_until > now]

    async def leave(self, member_id: str) -> None:
        self._members.pop(member_id, None)
