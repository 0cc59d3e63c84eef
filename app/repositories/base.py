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


OPERATOR_ACTOR_PREFIX = "cli"


@dataclass(frozen=True, slots=True)
class AuditActor:
    """Who asked for a change, as the audit trail records it.

    ``prefix`` is the calling key's public prefix, or ``cli`` for the operator command line
    (which can write to the database anyway, so it has no key). ``request_id`` ties the row to
    the HTTP request's log lines; a plain string, so the service needs nothing from the API.
    """

    prefix: str
    request_id: str | None = None


OPERATOR = AuditActor(OPERATOR_ACTOR_PREFIX)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One admin action of the audit trail. Never a key's plaintext or digest."""

    id: int
    occurred_at: datetime
    actor_prefix: str
    action: str
    target_prefix: str
    detail: str | None
    request_id: str | None
    finality: str | None


@dataclass(frozen=True, slots=True)
class Revocation:
    """A committed revocation, the event that carries it to every process, and its audit row.

    ``audit_id`` is the row of the revocation that took effect, a repeat's included (0 when
    there is none, e.g. a key revoked before the audit trail existed).
    """

    record: ApiKeyRecord
    event_id: int
    newly_revoked: bool
    audit_id: int = 0


@dataclass(frozen=True, slots=True)
class Rotation:
    """A committed rotation: the old key (expiring at the end of its grace), its successor."""

    old: ApiKeyRecord
    new: ApiKeyRecord
    event_id: int
    audit_id: int = 0


@dataclass(frozen=True, slots=True)
class KeyEvent:
    """One entry of the event log: a change that narrowed what a key may do."""

    id: int
    prefix: str
    kind: str
    shared_done: bool
    digest: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class MemberState:
    """A serving process as the registry knows it."""

    member_id: str
    description: str
    applied_event_id: int
    lease_until: datetime


class ApiKeyRepository(Protocol):
    """Database access for keys. Every method raises ``RepositoryUnavailable`` on outage."""

    async def add(self, record: ApiKeyRecord, *, actor: AuditActor = OPERATOR) -> None:
        """Insert a new key and its ``created`` audit row in one transaction; ``DuplicateKey``
        when its prefix or digest exists."""
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

    async def revoke(
        self, prefix: str, at: datetime, *, actor: AuditActor = OPERATOR
    ) -> Revocation | None:
        """Mark revoked, log a ``revoked`` event and a ``revoked`` audit row, in one transaction;
        ``None`` if unknown.

        Idempotent: the first revocation time is kept, and a repeat logs nothing new (its
        ``event_id`` and ``audit_id`` are the original revocation's).
        """
        ...

    async def rotate(
        self,
        prefix: str,
        successor: ApiKeyRecord,
        grace_until: datetime,
        now: datetime,
        *,
        actor: AuditActor = OPERATOR,
    ) -> Rotation:
        """Issue ``successor`` and bring the old key's expiry forward to ``grace_until``, with a
        ``rotated`` event and audit row (its detail: the successor's prefix), in one transaction
        with a conditional update.

        Raises ``UnknownKeyPrefix``; ``KeyNotActive`` (naming the successor, if any) when the
        key is revoked, expired or already rotated; ``DuplicateKey`` when the successor's
        prefix or digest exists.
        """
        ...

    async def record_finality(self, audit_id: int, how: str) -> None:
        """Fill in how a change became final, once: known only after the change committed (the
        wait for finality happens outside its transaction), so this is a statement of its own
        and a row keeps the first answer it was given."""
        ...

    async def list_audit(
        self, *, limit: int, before_id: int | None = None, target_prefix: str | None = None
    ) -> list[AuditEntry]:
        """At most ``limit`` audit rows, newest first, with an id below ``before_id``;
        ``target_prefix``: only the actions on that key. One indexed range read."""
        ...

    async def ping(self) -> None:
        """Raise ``RepositoryUnavailable`` unless the database answers."""
        ...


class EventLogRepository(Protocol):
    """The event log and the registry of the processes that apply it.

    Every method raises ``RepositoryUnavailable`` on outage.
    """

    async def last_event_id(self) -> int:
        """The newest event's id (0 when there is none)."""
        ...

    async def last_event_id_before(self, at: datetime) -> int:
        """The newest id of the events that occurred before ``at`` (0 when there is none)."""
        ...

    async def events_after(self, event_id: int, limit: int) -> list[KeyEvent]:
        """Events with an id above ``event_id``, oldest first."""
        ...

    async def event_state(self, event_id: int) -> KeyEvent | None: ...

    async def mark_shared_done(self, event_id: int, at: datetime) -> None:
        """Record that the shared cache reflects the event (idempotent)."""
        ...

    async def renew_member(
        self, member_id: str, description: str, applied_event_id: int, lease_until: datetime
    ) -> None:
        """Register or refresh a member: how far it applied the log, until when it may trust
        what it holds."""
        ...

    async def live_members(self, now: datetime) -> list[MemberState]:
        """Members whose lease has not lapsed at ``now``."""
        ...

    async def leave(self, member_id: str) -> None:
        """Unregister a member that stops (it holds nothing any more)."""
        ...
