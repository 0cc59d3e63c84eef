"""The audit trail: which admin key (or the command line) created, revoked or rotated a key.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

Each row is written in the transaction of the change it records, so a change without its row
(or a row without its change) cannot be committed. ``finality`` alone is filled afterwards, by a
separate statement, once the wait for the revocation to be final everywhere has an answer.
The primary key is the index on ``id`` (the unfiltered listing, newest first);
``ix_audit_log_target_prefix_id`` serves "the actions on this key" from a cursor.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_AUDIT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", _AUDIT_ID, primary_key=True, autoincrement=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_prefix", sa.String(32), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("target_prefix", sa.String(32), nullable=False),
        sa.Column("detail", sa.String(200), nullable=True),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("finality", sa.String(200), nullable=True),
    )
    op.create_index("ix_audit_log_target_prefix_id", "audit_log", ["target_prefix", "id"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_target_prefix_id", table_name="audit_log")
    op.drop_table("audit_log")
