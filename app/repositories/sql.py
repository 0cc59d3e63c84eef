"""The key repository on SQLAlchemy (async): SQLite by default, PostgreSQL in deployments.

Every database call runs under a deadline, and every way the database can fail to answer
(refused or dropped connection, timeout, pool exhausted, driver error) becomes
``RepositoryUnavailable``, so the request path answers 503 and never 401 or a stack trace.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

from sqlalchemy import func, literal, or_, select, text, true, tuple_, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from app.db.models import ApiKeyRow
from app.db.types import UtcDateTime
from app.domain.errors import DuplicateKey, RepositoryUnavailable
from app.repositories.base import ApiKeyRecord, KeyPosition

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
        except (DuplicateKey, RepositoryUnavailable):
            raise
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            logger.warning("database unavailable: %s", type(exc).__name__)
            raise RepositoryUnavailable(f"database unavailable ({type(exc).__name__})") from exc

    async def add(self, record: ApiKeyRecord) -> None:
        row = ApiKeyRow(
            prefix=record.prefix,
            digest=record.digest,
            name=record.name,
            scopes=" ".join(record.scopes),
            created_at=record.created_at,
            expires_at=record.expires_at,
            revoked_at=record.revoked_at,
        )
        async with self._session() as session:
            session.add(row)
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

    async def revoke(self, prefix: str, at: datetime) -> ApiKeyRecord | None:
        async with self._session() as session:
            await session.execute(
                update(ApiKeyRow)
                .where(ApiKeyRow.prefix == prefix, ApiKeyRow.revoked_at.is_(None))
                .values(revoked_at=at)
            )
            await session.commit()
            row = await session.get(ApiKeyRow, prefix, populate_existing=True)
            return None if row is None else _to_record(row)

    async def set_expiry(self, prefix: str, expires_at: datetime) -> ApiKeyRecord | None:
        async with self._session() as session:
            await session.execute(
                update(ApiKeyRow)
                .where(
                    ApiKeyRow.prefix == prefix,
                    or_(ApiKeyRow.expires_at.is_(None), ApiKeyRow.expires_at > expires_at),
                )
                .values(expires_at=expires_at)
            )
            await session.commit()
            row = await session.get(ApiKeyRow, prefix, populate_existing=True)
            return None if row is None else _to_record(row)

    async def ping(self) -> None:
        async with self._session() as session:
            await session.execute(text("SELECT 1"))
