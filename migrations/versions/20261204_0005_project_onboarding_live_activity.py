"""Onboarding by analytics project id, MCP keys, and the live-activity index.

* ``products.provider`` / ``provider_project_id`` / ``name`` / ``owner_token_sha256``: what the
  stock autoplay-sdk 0.13.0 ``onboard_product(provider_project_id, ...)`` registers. A
  (provider, provider_project_id) pair names one product; products registered the 0.7.2 way
  have neither (NULLs never collide in the unique constraint).
* ``credentials.kind`` may be ``mcp_key``: the key agents read live activity with (REST and MCP).
  A lookup by hash finds the product a presented key belongs to.
* ``ix_events_live_activity``: one user's recent activity without scanning the product's other
  users. One key per user, not per event: Postgres deduplicates the entries into posting lists,
  so the index is about an eighth of a per-event one and an insert touches far fewer pages
  (a per-event key cost HTTP ingest 13 % on a 1.1 M-row partition; this one 3-5 %: see
  docs/performance.md). Partial (internal events are never read there), so it also costs ingest
  nothing for them. Built CONCURRENTLY on every existing partition first, so upgrading a large
  event log does not block ingest while it builds; the index on the partitioned table then only
  attaches them.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COMMENTS = {
    "provider": "Analytics provider of a product registered by project id: posthog or amplitude "
    "(NULL for products registered with a product_id of their own).",
    "provider_project_id": "The PostHog or Amplitude project id it was registered with; "
    "(provider, provider_project_id) names one product.",
    "name": "Display name given at registration (optional).",
    "owner_token_sha256": "SHA-256 of the owner token returned once at registration by project id; "
    "re-registering the project without it is refused.",
}
KIND_COMMENT = "webhook_secret (also the ingest secret), stream_key or mcp_key."
SOURCE_COMMENT = (
    "How the event arrived: 'webhook' (a PostHog destination, at /webhook or /ingest), "
    "'capture' (posthog-js straight to the receiver) or 'amplitude' (Amplitude Event Streaming "
    "to /ingest)."
)
OLD_SOURCE_COMMENT = (
    "How the event arrived: 'webhook' (PostHog destination) or 'capture' "
    "(posthog-js straight to the receiver)."
)
LIVE_INDEX = "ix_events_live_activity"
LIVE_COLUMNS = ("product_id", "distinct_id")
LIVE_WHERE = "action_type <> 'internal'"


def upgrade() -> None:
    op.add_column("products", sa.Column("provider", sa.Text, comment=COMMENTS["provider"]))
    op.add_column(
        "products", sa.Column("provider_project_id", sa.Text, comment=COMMENTS["provider_project_id"])
    )
    op.add_column("products", sa.Column("name", sa.Text, comment=COMMENTS["name"]))
    op.add_column(
        "products",
        sa.Column("owner_token_sha256", sa.LargeBinary, comment=COMMENTS["owner_token_sha256"]),
    )
    op.create_check_constraint(
        "ck_products_provider", "products", "provider IN ('posthog', 'amplitude')"
    )
    op.create_check_constraint(
        "ck_products_provider_project",
        "products",
        "(provider IS NULL) = (provider_project_id IS NULL)",
    )
    op.create_unique_constraint(
        "uq_products_provider_provider_project_id", "products", ["provider", "provider_project_id"]
    )

    op.drop_constraint("ck_credentials_kind", "credentials", type_="check")
    op.create_check_constraint(
        "ck_credentials_kind", "credentials", "kind IN ('webhook_secret', 'stream_key', 'mcp_key')"
    )
    op.alter_column("credentials", "kind", comment=KIND_COMMENT, existing_type=sa.Text)
    op.create_index("ix_credentials_secret_sha256", "credentials", ["secret_sha256"])
    op.alter_column("events", "source", comment=SOURCE_COMMENT, existing_type=sa.Text)

    # Each existing partition first, without blocking writes; then the partitioned index, which
    # attaches those (matching definitions) instead of building anew.
    partitions = [
        r[0]
        for r in op.get_bind().execute(
            sa.text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'events'::regclass AND c.relkind = 'r' ORDER BY 1"
            )
        )
    ]
    if partitions:
        with op.get_context().autocommit_block():
            for name in partitions:
                # Names come from the catalog (events_pYYYYMMDD, events_default), not from input.
                op.execute(
                    f'CREATE INDEX CONCURRENTLY IF NOT EXISTS "{name}_live_activity" '
                    f'ON "{name}" ({", ".join(LIVE_COLUMNS)}) WHERE {LIVE_WHERE}'
                )
    op.create_index(
        LIVE_INDEX, "events", list(LIVE_COLUMNS), postgresql_where=sa.text(LIVE_WHERE)
    )


def downgrade() -> None:
    op.drop_index(LIVE_INDEX, table_name="events")
    op.alter_column("events", "source", comment=OLD_SOURCE_COMMENT, existing_type=sa.Text)
    op.drop_index("ix_credentials_secret_sha256", table_name="credentials")
    op.execute("DELETE FROM credentials WHERE kind = 'mcp_key'")
    op.drop_constraint("ck_credentials_kind", "credentials", type_="check")
    op.create_check_constraint(
        "ck_credentials_kind", "credentials", "kind IN ('webhook_secret', 'stream_key')"
    )
    op.alter_column(
        "credentials", "kind", comment="webhook_secret or stream_key.", existing_type=sa.Text
    )
    op.drop_constraint("uq_products_provider_provider_project_id", "products", type_="unique")
    op.drop_constraint("ck_products_provider_project", "products", type_="check")
    op.drop_constraint("ck_products_provider", "products", type_="check")
    for column in ("owner_token_sha256", "name", "provider_project_id", "provider"):
        op.drop_column("products", column)
