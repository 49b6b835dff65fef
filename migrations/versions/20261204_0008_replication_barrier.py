"""``replication_barrier``: the rows receivers rewrite to learn what the synchronous standby has.

A read that is about to be streamed must not contain a commit that only the primary has (its
wait for the standby was cancelled, or the primary died during it): a failover would take it
back and give its position to another event. A one-row write whose commit waits for the
synchronous standby, and succeeds, confirms everything written before it
(receiver.storage.replication). 64 rows, rewritten in place; no event data.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE_COMMENT = (
    "Barriers, no data: a receiver rewrites one of these 64 rows and waits for the synchronous "
    "standby to confirm it before it streams what it read (receiver.storage.replication)."
)


def upgrade() -> None:
    op.create_table(
        "replication_barrier",
        sa.Column(
            "slot", sa.SmallInteger, nullable=False, autoincrement=False,
            comment="pg_backend_pid() % 64 of the session that wrote the barrier.",
        ),
        sa.Column(
            "confirmed_at", sa.DateTime(timezone=True), nullable=False,
            comment="When a barrier was last committed in this slot.",
        ),
        sa.PrimaryKeyConstraint("slot", name="pk_replication_barrier"),
        sa.CheckConstraint("slot >= 0 AND slot < 64", name="ck_replication_barrier_slot"),
        comment=TABLE_COMMENT,
    )


def downgrade() -> None:
    op.drop_table("replication_barrier")
