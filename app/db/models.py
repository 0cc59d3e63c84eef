"""The tables. Migrations in ``app/db/migrations`` create them; keep the two in step."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Index, Integer, String, false
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.db.types import UtcDateTime
from app.domain.scopes import ADMIN


class Base(DeclarativeBase):
    pass


def _holds_admin(context: DefaultExecutionContext) -> bool:
    """``is_admin`` of a row being inserted, from its scopes: the two cannot disagree."""
    parameters = context.current_parameters or {}
    return ADMIN in str(parameters.get("scopes") or "").split()


class ApiKeyRow(Base):
    """One API key. Only the sha256 digest of the key is stored, never the plaintext."""

    __tablename__ = "api_keys"
    __table_args__ = (
        # Listing pages: a range read in (created_at, prefix) order (migration 0003).
        Index("ix_api_keys_created_at_prefix", "created_at", "prefix"),
        # "Is there an active admin key?": only unrevoked admin rows are read (migration 0003).
        Index("ix_api_keys_admin_revoked_expires", "is_admin", "revoked_at", "expires_at"),
    )

    prefix: Mapped[str] = mapped_column(String(32), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    name: Mapped[str] = mapped_column(String(100))
    # Space-separated scope names: a handful of known words, so no JSON or join table is needed.
    scopes: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    # Set, once, by the rotation that issued this key's successor: a key rotates only once.
    successor_prefix: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # Whether ``scopes`` holds ``admin``, set at insert time: a word inside a space-separated
    # string cannot be found through an index, a boolean column can. A key's scopes never
    # change (rotation inserts a new row), so the two stay in step.
    is_admin: Mapped[bool] = mapped_column(Boolean, default=_holds_admin, server_default=false())


EVENT_ID = BigInteger().with_variant(Integer(), "sqlite")


class KeyEventRow(Base):
    """One change that narrowed what a key may do, written in the transaction that made it.

    Every serving process applies these in ``id`` order ("events after my last id"): the
    durable path of a revocation, which needs no Redis.
    """

    __tablename__ = "key_events"
    # Where a starting process begins reading the log (migration 0005).
    __table_args__ = (Index("ix_key_events_occurred_at", "occurred_at"),)

    id: Mapped[int] = mapped_column(EVENT_ID, primary_key=True, autoincrement=True)
    prefix: Mapped[str] = mapped_column(String(32))
    digest: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # When the shared cache (Redis) was brought in line with the event, by whichever process
    # managed it first; NULL while no process could (the revoker, or any member, retries).
    shared_done_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class MemberRow(Base):
    """A serving process, its lease, and how far it has applied the event log."""

    __tablename__ = "members"

    member_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str] = mapped_column(String(200))
    applied_event_id: Mapped[int] = mapped_column(EVENT_ID)
    lease_until: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


class AuditRow(Base):
    """One admin action (created, revoked, rotated), written in the transaction of the change.

    ``finality`` is the exception: how a revocation (or rotation) became final is known only
    after the wait that follows the commit, so it is NULL until a statement of its own fills it.
    No digest, no plaintext: the trail is read by people.
    """

    __tablename__ = "audit_log"
    __table_args__ = (
        # "Actions on this key", newest first from a cursor: one range read (migration 0004).
        # The unfiltered listing reads the primary key, which is the index on ``id``.
        Index("ix_audit_log_target_prefix_id", "target_prefix", "id"),
    )

    id: Mapped[int] = mapped_column(EVENT_ID, primary_key=True, autoincrement=True)
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # The calling key's public prefix, or "cli" for the operator command line.
    actor_prefix: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(16))
    target_prefix: Mapped[str] = mapped_column(String(32))
    # For a rotation, the successor's prefix.
    detail: Mapped[str | None] = mapped_column(String(200), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    finality: Mapped[str | None] = mapped_column(String(200), nullable=True)
