"""Indexes for listing keys a page at a time, and an indexable "holds admin" flag.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

``GET /v1/keys`` reads pages in (created_at, prefix) order from a position (keyset
pagination): the composite index makes each page a range read. ``serve --bootstrap-admin``
asks whether an active admin key exists; scopes are a space-separated string, which no index
can search for a word, so ``is_admin`` records it once at insert time (backfilled here from
the scopes of existing rows) and a composite index on (is_admin, revoked_at, expires_at)
leaves only unrevoked admin keys to read.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(
            sa.Column("is_admin", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    # Pad with spaces so "admin" matches the whole word only (never e.g. "sysadmin").
    op.execute("UPDATE api_keys SET is_admin = (' ' || scopes || ' ' LIKE '% admin %')")
    op.create_index("ix_api_keys_created_at_prefix", "api_keys", ["created_at", "prefix"])
    op.create_index(
        "ix_api_keys_admin_revoked_expires", "api_keys", ["is_admin", "revoked_at", "expires_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_api_keys_admin_revoked_expires", table_name="api_keys")
    op.drop_index("ix_api_keys_created_at_prefix", table_name="api_keys")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("is_admin")
