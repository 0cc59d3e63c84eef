"""The key repository on SQLAlchemy (async): SQLite by default, PostgreSQL in deployments.

Every database call runs under a deadline, and every way the database can fail to answer
(refused or dropped connection, timeout, pool exhausted, driver error) becomes
``RepositoryUnavailable``, so the request path answers 503 and never 401 or a stack trace.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

from sqlalchemy import delete, func, literal, or_, select, text, true, tuple_, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from app.db.models import ApiKeyRow, AuditRow, KeyEventRow, MemberRow
from app.db.types import UtcDateTime
from app.domain.errors import DuplicateKey, KeyNotActive, RepositoryUnavailable, UnknownKeyPrefix
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

logger = logging.getLogger(__name__)


def _to_record(row: ApiKeyRow) -> ApiKeyRecord:
    return ApiKeyRecord(
        prefix=row.prefix,
        name=row.name,
        scopes=tuple(row.scopes.split()),
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        digest=row.digest,
    )


def _to_row(record: ApiKeyRecord) -> ApiKeyRow:
    return ApiKeyRow(
        prefix=record.prefix,
        digest=record.digest,
        name=record.name,
        scopes=" ".join(record.scopes),
        created_at=record.created_at,
        expires_at=record.expires_at,
        revoked_at=record.revoked_at,
    )


def _rowcount(result: object) -> int:
    count: int = getattr(result, "rowcount", 0)
    return count


def _locks_rows(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


# Any constant: the advisory lock that orders event writes on PostgreSQL.
_EVENT_LOG_LOCK = 0x6A6D_6576


async def _serialize_event_writes(session: AsyncSession) -> None:
    """Make event ids commit in the order they are allocated.

    Readers ask for "events after my last id". On PostgreSQL a sequence hands out ids at insert
    time, so two transactions could commit 6 before 5 and a reader that saw 6 would never look
    at 5 again. A transaction-scoped advisory lock taken before the insert makes allocation
    order commit order; changes that narrow a key are rare, so the serialisation costs nothing.
    SQLite serialises writers anyway.
    """
    if _locks_rows(session):
        await session.execute(
            text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": _EVENT_LOG_LOCK}
        )


async def _log_event(session: AsyncSession, row: ApiKeyRow, kind: str, at: datetime) -> int:
    event = KeyEventRow(prefix=row.prefix, digest=row.digest, kind=kind, occurred_at=at)
    session.add(event)
    await session.flush()
    return event.id


async def _last_event_of(session: AsyncSession, prefix: str) -> int:
    last = await session.scalar(
        select(func.max(KeyEventRow.id)).where(KeyEventRow.prefix == prefix)
    )
    return int(last or 0)


def _audit(
    session: AsyncSession,
    actor: AuditActor,
    action: str,
    target_prefix: str,
    at: datetime,
    detail: str | None = None,
) -> AuditRow:
    """Add the audit row of a change to the change's own session (so its transaction)."""
    row = AuditRow(
        occurred_at=at,
        actor_prefix=actor.prefix,
        action=action,
        target_prefix=target_prefix,
        detail=detail,
        request_id=actor.request_id,
    )
    session.add(row)
    return row


async def _audit_id_of(session: AsyncSession, action: str, target_prefix: str) -> int:
    """The row of the one ``action`` that took effect on a key (0 when it predates the trail)."""
    found = await session.scalar(
        select(func.min(AuditRow.id)).where(
            AuditRow.target_prefix == target_prefix, AuditRow.action == action
        )
    )
    return int(found or 0)


def _to_audit_entry(row: AuditRow) -> AuditEntry:
    return AuditEntry(
        id=row.id,
        occurred_at=row.occurred_at,
        actor_prefix=row.actor_prefix,
        action=row.action,
        target_prefix=row.target_prefix,
        detail=row.detail,
        request_id=row.request_id,
        finality=row.finality,
    )


def _to_event(row: KeyEventRow) -> KeyEvent:
    return KeyEvent(
        id=row.id,
        prefix=row.prefix,
        kind=row.kind,
        shared_done=row.shared_done_at is not None,
        digest=row.digest,
    )


def _unexpired_at(now: datetime) -> ColumnElement[bool]:
    return or_(ApiKeyRow.expires_at.is_(None), ApiKeyRow.expires_at > now)


class SqlApiKeyRepository:
    """Implements ``ApiKeyRepository``; one short session (and transaction) per call."""

    def __init__(
        self, session_factory: async_sessionmaker[AsyncSession], timeout_seconds: float = 2.0
    ) -> None:
        self._sessions = session_factory
        self._timeout = timeout_seconds

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[AsyncSession]:
        """A session whose work is bounded in time and whose failures are ``RepositoryUnavailable``.

        ``DuplicateKey`` passes through: it is an answer from a healthy database.
        """
        try:
            async with asyncio.timeout(self._timeout), self._sessions() as session:
                yield session
        except (DuplicateKey, RepositoryUnavailable, KeyNotActive, UnknownKeyPrefix):
            raise
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            logger.warning("database unavailable: %s", type(exc).__name__)
            raise RepositoryUnavailable(f"database unavailable ({type(exc).__name__})") from exc

    async def add(self, record: ApiKeyRecord, *, actor: AuditActor = OPERATOR) -> None:
        async with self._session() as session:
            session.add(_to_row(record))
            _audit(session, actor, "created", record.prefix, record.created_at)
            try:
                await session.commit()
            except IntegrityError:
                raise DuplicateKey(record.prefix) from None

    async def get_by_digest(self, digest: str) -> ApiKeyRecord | None:
        async with self._session() as session:
            row = await session.scalar(select(ApiKeyRow).where(ApiKeyRow.digest == digest))
            return None if row is None else _to_record(row)

    async def get_by_prefix(self, prefix: str) -> ApiKeyRecord | None:
        async with self._session() as session:
            row = await session.get(ApiKeyRow, prefix)
            return None if row is None else _to_record(row)

    async def list_keys(
        self,
        *,
        limit: int,
        after: KeyPosition | None = None,
        active_at: datetime | None = None,
        name_prefix: str | None = None,
    ) -> list[ApiKeyRecord]:
        """One range read of ``ix_api_keys_created_at_prefix`` from ``after`` (see the protocol).

        The position is compared as a row value, ``(created_at, prefix) > (:at, :prefix)``,
        which PostgreSQL and SQLite both turn into an index range start; the expanded
        ``a > x OR (a = x AND b > y)`` form makes PostgreSQL scan from the first row.
        """
        query = select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.prefix).limit(limit)
        if after is not None:
            created_at, prefix = after
            query = query.where(
                tuple_(ApiKeyRow.created_at, ApiKeyRow.prefix)
                > tuple_(literal(created_at, UtcDateTime()), literal(prefix))
            )
        if active_at is not None:
            query = query.where(ApiKeyRow.revoked_at.is_(None), _unexpired_at(active_at))
        if name_prefix is not None:
            # LIKE with its wildcards escaped, then an exact comparison: SQLite's LIKE ignores
            # ASCII case, and the filter is meant to be case-sensitive on every backend.
            query = query.where(
                ApiKeyRow.name.startswith(name_prefix, autoescape=True),
                func.substr(ApiKeyRow.name, 1, len(name_prefix)) == name_prefix,
            )
        async with self._session() as session:
            rows = await session.scalars(query)
            return [_to_record(row) for row in rows]

    async def has_active_admin(self, now: datetime) -> bool:
        """One read of ``ix_api_keys_admin_revoked_expires``, stopping at the first match."""
        query = (
            select(ApiKeyRow.prefix)
            .where(
                ApiKeyRow.is_admin == true(),
                ApiKeyRow.revoked_at.is_(None),
                _unexpired_at(now),
            )
            .limit(1)
        )
        async with self._session() as session:
            return (await session.scalar(query)) is not None

    async def revoke(
        self, prefix: str, at: datetime, *, actor: AuditActor = OPERATOR
    ) -> Revocation | None:
        async with self._session() as session:
            await _serialize_event_writes(session)
            updated = await session.execute(
                update(ApiKeyRow)
                .where(ApiKeyRow.prefix == prefix, ApiKeyRow.revoked_at.is_(None))
                .values(revoked_at=at)
            )
            row = await session.get(ApiKeyRow, prefix, populate_existing=True)
            if row is None:
                await session.rollback()
                return None
            if _rowcount(updated) == 1:
                event_id = await _log_event(session, row, "revoked", at)
                audit = _audit(session, actor, "revoked", prefix, at)
                await session.flush()
                audit_id = audit.id
                newly_revoked = True
            else:
                # A repeat changes nothing, so it is no action of its own: the trail keeps the
                # revocation that took effect (and who made it).
                event_id = await _last_event_of(session, prefix)
                audit_id = await _audit_id_of(session, "revoked", prefix)
                newly_revoked = False
            record = _to_record(row)
            await session.commit()
            return Revocation(
                record=record,
                event_id=event_id,
                newly_revoked=newly_revoked,
                audit_id=audit_id,
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
        async with self._session() as session:
            await _serialize_event_writes(session)
            old = await session.get(ApiKeyRow, prefix, with_for_update=_locks_rows(session))
            if old is None:
                raise UnknownKeyPrefix(prefix)
            original_expiry = old.expires_at
            narrowed = (
                grace_until
                if original_expiry is None or grace_until < original_expiry
                else original_expiry
            )
            claimed = await session.execute(
                update(ApiKeyRow)
                .where(
                    ApiKeyRow.prefix == prefix,
                    ApiKeyRow.revoked_at.is_(None),
                    ApiKeyRow.successor_prefix.is_(None),
                    or_(ApiKeyRow.expires_at.is_(None), ApiKeyRow.expires_at > now),
                )
                .values(successor_prefix=successor.prefix, expires_at=narrowed)
            )
            if _rowcount(claimed) != 1:
                current = await session.get(ApiKeyRow, prefix, populate_existing=True)
                successor_prefix = None if current is None else current.successor_prefix
                await session.rollback()
                raise KeyNotActive(prefix, successor_prefix)
            # The successor keeps the old key's own expiry, never the grace it was just given.
            session.add(_to_row(dataclasses.replace(successor, expires_at=original_expiry)))
            try:
                await session.flush()
            except IntegrityError:
                await session.rollback()
                raise DuplicateKey(successor.prefix) from None
            row = await session.get(ApiKeyRow, prefix, populate_existing=True)
            assert row is not None
            event_id = await _log_event(session, row, "rotated", now)
            audit = _audit(session, actor, "rotated", prefix, now, detail=successor.prefix)
            await session.flush()
            new_row = await session.get(ApiKeyRow, successor.prefix)
            assert new_row is not None
            rotation = Rotation(
                old=_to_record(row),
                new=_to_record(new_row),
                event_id=event_id,
                audit_id=audit.id,
            )
            await session.commit()
            return rotation

    async def record_finality(self, audit_id: int, how: str) -> None:
        async with self._session() as session:
            await session.execute(
                update(AuditRow)
                .where(AuditRow.id == audit_id, AuditRow.finality.is_(None))
                .values(finality=how[:200])
            )
            await session.commit()

    async def list_audit(
        self, *, limit: int, before_id: int | None = None, target_prefix: str | None = None
    ) -> list[AuditEntry]:
        """A backwards range read of the primary key, or of ``ix_audit_log_target_prefix_id``
        when filtered by target."""
        query = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
        if before_id is not None:
            query = query.where(AuditRow.id < before_id)
        if target_prefix is not None:
            query = query.where(AuditRow.target_prefix == target_prefix)
        async with self._session() as session:
            rows = await session.scalars(query)
            return [_to_audit_entry(row) for row in rows]

    async def ping(self) -> None:
        async with self._session() as session:
            await session.execute(text("SELECT 1"))


class SqlEventLogRepository:
    """Implements ``EventLogRepository`` on the same database as the keys."""

    def __init__(
        self, session_factory: async_sessionmaker[AsyncSession], timeout_seconds: float = 2.0
    ) -> None:
        # The same bounded sessions and error mapping as the keys' repository.
        self._keys = SqlApiKeyRepository(session_factory, timeout_seconds)

    async def last_event_id(self) -> int:
        async with self._keys._session() as session:
            return int(await session.scalar(select(func.max(KeyEventRow.id))) or 0)

    async def last_event_id_before(self, at: datetime) -> int:
        async with self._keys._session() as session:
            first_since = await session.scalar(
                select(func.min(KeyEventRow.id)).where(KeyEventRow.occurred_at >= at)
            )
            if first_since is not None:
                return int(first_since) - 1
            return int(await session.scalar(select(func.max(KeyEventRow.id))) or 0)

    async def events_after(self, event_id: int, limit: int) -> list[KeyEvent]:
        async with self._keys._session() as session:
            rows = await session.scalars(
                select(KeyEventRow)
                .where(KeyEventRow.id > event_id)
                .order_by(KeyEventRow.id)
                .limit(limit)
            )
            return [_to_event(row) for row in rows]

    async def event_state(self, event_id: int) -> KeyEvent | None:
        async with self._keys._session() as session:
            row = await session.get(KeyEventRow, event_id)
            return None if row is None else _to_event(row)

    async def mark_shared_done(self, event_id: int, at: datetime) -> None:
        async with self._keys._session() as session:
            await session.execute(
                update(KeyEventRow)
                .where(KeyEventRow.id == event_id, KeyEventRow.shared_done_at.is_(None))
                .values(shared_done_at=at)
            )
            await session.commit()

    async def renew_member(
        self, member_id: str, description: str, applied_event_id: int, lease_until: datetime
    ) -> None:
        async with self._keys._session() as session:
            renewed = await session.execute(
                update(MemberRow)
                .where(MemberRow.member_id == member_id)
                .values(applied_event_id=applied_event_id, lease_until=lease_until)
            )
            if _rowcount(renewed) == 0:
                session.add(
                    MemberRow(
                        member_id=member_id,
                        description=description[:200],
                        applied_event_id=applied_event_id,
                        lease_until=lease_until,
                    )
                )
            await session.commit()

    async def live_members(self, now: datetime) -> list[MemberState]:
        async with self._keys._session() as session:
            rows = await session.scalars(select(MemberRow).where(MemberRow.lease_until > now))
            return [
                MemberState(
                    member_id=row.member_id,
                    description=row.description,
                    applied_event_id=row.applied_event_id,
                    lease_until=row.lease_until,
                )
                for row in rows
            ]

    async def leave(self, member_id: str) -> None:
        async with self._keys._session() as session:
            await session.execute(delete(MemberRow).where(MemberRow.member_id == member_id))
            await session.commit()
