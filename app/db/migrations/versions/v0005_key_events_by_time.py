"""The event log by time: where a new serving process starts reading it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29

A process that starts reads the revocations of the last cache TTL (plus a lease), not only the
ones after it started: a replicated Redis can lose a tombstone in a failover, and the stale
"active" value it leaves may be read by a process that never saw the revocation.
``ix_key_events_occurred_at`` finds the first such event with one range read.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_key_events_occurred_at", "key_events", ["occurred_at"])


def downgrade() -> None:
    op.drop_index("ix_key_events_occurred_at", table_name="key_events")
