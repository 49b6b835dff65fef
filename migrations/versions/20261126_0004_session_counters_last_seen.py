"""``session_counters.last_seen_at``, so idle sessions' counters can be pruned.

One row per session ever seen grew without bound; retention now deletes the counters of
sessions idle for longer than the product's event retention (receiver.retention). Existing
rows take the time of the upgrade (nothing older is known), so they are pruned one retention
period after it at the earliest.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COMMENT = "When the session last had an event (pruned after the product's retention)."


def upgrade() -> None:
    # now() is not volatile: Postgres stores it once as the column's default for existing rows
    # (no table rewrite).
    op.add_column(
        "session_counters",
        sa.Column(
            "last_seen_at", sa.DateTime(timezone=True), nullable=False,
            server_default=sa.text("now()"), comment=COMMENT,
        ),
    )


def downgrade() -> None:
    op.drop_column("session_counters", "last_seen_at")
