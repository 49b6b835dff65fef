"""Partition the event log by day, per-product retention, analyst views.

* ``events`` becomes ``PARTITION BY RANGE (received_at)`` with one partition per UTC day
  (``events_pYYYYMMDD``) and a DEFAULT partition (``events_default``) so an insert never
  fails. The primary key must contain the partition column: it becomes
  ``(product_id, position, received_at)``. Positions stay unique per product by construction
  (they are allocated under the ``products`` row lock), and stream reads keep using the
  key's ``(product_id, position)`` prefix in every partition.
* The existing unpartitioned table is taken over without losing a row: renamed, a
  partitioned parent is created with the same columns and column comments, partitions are
  created for every day the old rows cover (plus the days ahead), the rows are copied, the
  counts are checked, and only then is the old table dropped. ``downgrade`` does the reverse.
* ``products.retention_days`` / ``products.payload_retention_days``: per-product overrides of
  ``RECEIVER_RETENTION_DAYS`` / ``RECEIVER_PAYLOAD_RETENTION_DAYS`` (NULL = the global value,
  0 = keep forever).
* ``retention_state``: per-product watermark of payload clearing, so each maintenance run
  only touches rows it has not cleared yet.
* ``ix_event_keys_received_at``: lets maintenance prune old dedup keys.
* Views ``pageviews``, ``clicks``, ``sessions``, ``daily_activity`` with comments.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DAYS_AHEAD = 3  # frozen here; the receiver's maintenance keeps its own (same) horizon
EVENTS_COMMENT = "One row per accepted PostHog event, normalized for SQL. Append-only."

# --------------------------------------------------------------------------- views (frozen)

VIEWS: dict[str, tuple[str, str, dict[str, str]]] = {
    "pageviews": (
        """
        SELECT product_id, position, occurred_at, received_at, session_id, distinct_id, email,
               canonical_url AS page, current_url, pathname, referrer, title
        FROM events
        WHERE action_type = 'pageview'
        """,
        "One row per page view ($pageview).",
        {
            "product_id": "Product the event belongs to.",
            "position": "Stream position of the page view (events.position).",
            "occurred_at": "When the page was viewed (client time, UTC).",
            "received_at": "When the receiver accepted the event (UTC).",
            "session_id": "PostHog $session_id.",
            "distinct_id": "The user (PostHog distinct_id).",
            "email": "The user's email super property, when registered.",
            "page": "Canonical URL of the page (events.canonical_url: no query, ids as :id).",
            "current_url": "Full URL as captured, query and fragment included.",
            "pathname": "Path of the URL.",
            "referrer": "PostHog $referrer ('$direct' when there was none).",
            "title": "Short label, e.g. 'Page Load: Billing'.",
        },
    ),
    "clicks": (
        """
        SELECT product_id, position, occurred_at, received_at, session_id, distinct_id, email,
               canonical_url AS page, current_url, element_text, element_tag, element_id,
               link_target, title, event,
               event = '$rageclick' AS rage, event = '$dead_click' AS dead
        FROM events
        WHERE action_type = 'click'
        """,
        "One row per click ($autocapture clicks, $rageclick and $dead_click).",
        {
            "product_id": "Product the event belongs to.",
            "position": "Stream position of the click (events.position).",
            "occurred_at": "When the click happened (client time, UTC).",
            "received_at": "When the receiver accepted the event (UTC).",
            "session_id": "PostHog $session_id.",
            "distinct_id": "The user (PostHog distinct_id).",
            "email": "The user's email super property, when registered.",
            "page": "Canonical URL of the page the click happened on.",
            "current_url": "Full URL as captured, query and fragment included.",
            "element_text": "Text a person would read on what was clicked.",
            "element_tag": "Tag of the clicked element (a, button, ...).",
            "element_id": "id attribute of the clicked element itself.",
            "link_target": "href of the clicked link, if any.",
            "title": "Short label, e.g. 'Click Invite member button'.",
            "event": "PostHog event name ($autocapture, $rageclick or $dead_click).",
            "rage": "True for PostHog's $rageclick events.",
            "dead": "True for PostHog's $dead_click events (nothing happened).",
        },
    ),
    "sessions": (
        """
        SELECT product_id,
               session_id,
               (array_agg(distinct_id ORDER BY occurred_at DESC, position DESC)
                    FILTER (WHERE distinct_id IS NOT NULL))[1] AS distinct_id,
               (array_agg(email ORDER BY occurred_at DESC, position DESC)
                    FILTER (WHERE email IS NOT NULL))[1] AS email,
               min(occurred_at) AS first_seen,
               max(occurred_at) AS last_seen,
               max(occurred_at) - min(occurred_at) AS duration,
               extract(epoch FROM max(occurred_at) - min(occurred_at))::float8 AS duration_seconds,
               count(*) AS events,
               count(*) FILTER (WHERE action_type = 'pageview') AS pageviews,
               count(DISTINCT canonical_url) AS pages,
               (array_agg(canonical_url ORDER BY occurred_at, position)
                    FILTER (WHERE canonical_url IS NOT NULL))[1] AS entry_page,
               (array_agg(canonical_url ORDER BY occurred_at DESC, position DESC)
                    FILTER (WHERE canonical_url IS NOT NULL))[1] AS exit_page
        FROM events
        WHERE session_id IS NOT NULL AND action_type <> 'internal'
        GROUP BY product_id, session_id
        """,
        "One row per product and PostHog session (SDK bookkeeping events excluded).",
        {
            "product_id": "Product the session belongs to.",
            "session_id": "PostHog $session_id.",
            "distinct_id": "The user: the session's latest distinct_id (the identified id "
            "once identify() ran).",
            "email": "The session's latest email super property.",
            "first_seen": "Time of the session's first event (client time, UTC).",
            "last_seen": "Time of the session's last event (client time, UTC).",
            "duration": "last_seen - first_seen (interval).",
            "duration_seconds": "last_seen - first_seen in seconds.",
            "events": "Number of events in the session (internal events excluded).",
            "pageviews": "Number of page views in the session.",
            "pages": "Number of distinct canonical URLs visited.",
            "entry_page": "Canonical URL of the session's first event.",
            "exit_page": "Canonical URL of the session's last event.",
        },
    ),
    "daily_activity": (
        """
        SELECT product_id,
               (occurred_at AT TIME ZONE 'UTC')::date AS day,
               count(DISTINCT distinct_id) AS users,
               count(DISTINCT session_id) AS sessions,
               count(*) AS events,
               count(*) FILTER (WHERE action_type = 'pageview') AS pageviews,
               count(*) FILTER (WHERE action_type = 'click') AS clicks
        FROM events
        WHERE action_type <> 'internal'
        GROUP BY product_id, (occurred_at AT TIME ZONE 'UTC')::date
        """,
        "Per product and UTC day (of occurred_at): users, sessions, events.",
        {
            "product_id": "Product.",
            "day": "UTC calendar day of occurred_at.",
            "users": "Distinct distinct_ids active that day (an anonymous id and the id it "
            "was identified as count twice).",
            "sessions": "Distinct sessions with an event that day.",
            "events": "Events that day (internal events excluded).",
            "pageviews": "Page views that day.",
            "clicks": "Clicks that day.",
        },
    ),
}


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _raw(sql: str) -> None:
    """Run SQL verbatim (no bind-parameter parsing: comments may contain ':id')."""
    op.get_bind().exec_driver_sql(sql)


def create_views() -> None:
    for name, (body, comment, columns) in VIEWS.items():
        _raw(f"CREATE VIEW {name} AS {body}")
        _raw(f"COMMENT ON VIEW {name} IS {_q(comment)}")
        for column, text in columns.items():
            _raw(f"COMMENT ON COLUMN {name}.{column} IS {_q(text)}")


def drop_views() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")


# --------------------------------------------------------------------------- partitions


def _partition_sql(day: date) -> str:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    end = start + timedelta(days=1)
    name = f"events_p{day:%Y%m%d}"
    return (
        f"CREATE TABLE {name} PARTITION OF events FOR VALUES "
        f"FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
    )


def upgrade() -> None:
    bind = op.get_bind()
    op.execute("SET LOCAL lock_timeout = '60s'")
    op.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
    op.execute("ALTER TABLE events RENAME TO events_0001")
    op.execute("ALTER TABLE events_0001 RENAME CONSTRAINT pk_events TO pk_events_0001")
    op.execute("ALTER INDEX ix_events_product_id_received_at RENAME TO ix_events_0001_received_at")
    # LIKE ... INCLUDING COMMENTS carries the column comments (the analysts' contract).
    op.execute(
        """
        CREATE TABLE events (
            LIKE events_0001 INCLUDING DEFAULTS INCLUDING COMMENTS INCLUDING STORAGE
                INCLUDING COMPRESSION,
            CONSTRAINT pk_events PRIMARY KEY (product_id, position, received_at)
        ) PARTITION BY RANGE (received_at)
        """
    )
    op.execute(f"COMMENT ON TABLE events IS {_q(EVENTS_COMMENT)}")
    op.execute("CREATE INDEX ix_events_product_id_received_at ON events (product_id, received_at)")
    op.execute("CREATE TABLE events_default PARTITION OF events DEFAULT")

    old_days = {
        r[0]
        for r in bind.execute(
            sa.text("SELECT DISTINCT (received_at AT TIME ZONE 'UTC')::date FROM events_0001")
        )
    }
    today = datetime.now(UTC).date()
    wanted = old_days | {today + timedelta(days=i) for i in range(DAYS_AHEAD + 1)}
    for day in sorted(wanted):
        op.execute(_partition_sql(day))

    op.execute("INSERT INTO events SELECT * FROM events_0001")
    moved = bind.execute(sa.text("SELECT count(*) FROM events")).scalar_one()
    before = bind.execute(sa.text("SELECT count(*) FROM events_0001")).scalar_one()
    if moved != before:  # pragma: no cover - a guard, never expected
        raise RuntimeError(f"partitioning copied {moved} of {before} events; rolled back")
    op.execute("DROP TABLE events_0001")

    # Retention settings per product (NULL = the global setting, 0 = keep forever).
    op.add_column(
        "products",
        sa.Column(
            "retention_days", sa.Integer, nullable=True,
            comment="Days events are kept; NULL = RECEIVER_RETENTION_DAYS, 0 = forever.",
        ),
    )
    op.add_column(
        "products",
        sa.Column(
            "payload_retention_days", sa.Integer, nullable=True,
            comment="Days the raw payload is kept (then set to NULL, typed columns stay); "
            "NULL = RECEIVER_PAYLOAD_RETENTION_DAYS, 0 = as long as the event.",
        ),
    )
    op.create_check_constraint(
        "ck_products_retention_days", "products", "retention_days >= 0"
    )
    op.create_check_constraint(
        "ck_products_payload_retention_days", "products", "payload_retention_days >= 0"
    )
    op.create_table(
        "retention_state",
        sa.Column("product_id", sa.Text, nullable=False),
        sa.Column(
            "payload_cleared_before", sa.DateTime(timezone=True), nullable=False,
            comment="Every payload received before this time has been cleared.",
        ),
        sa.PrimaryKeyConstraint("product_id", name="pk_retention_state"),
        sa.ForeignKeyConstraint(
            ["product_id"], ["products.product_id"], ondelete="CASCADE",
            name="fk_retention_state_product_id_products",
        ),
        comment="Progress of payload retention per product (maintenance bookkeeping).",
    )
    op.create_index("ix_event_keys_received_at", "event_keys", ["received_at"])
    create_views()


def downgrade() -> None:
    bind = op.get_bind()
    drop_views()
    op.drop_index("ix_event_keys_received_at", table_name="event_keys")
    op.drop_table("retention_state")
    op.drop_constraint("ck_products_payload_retention_days", "products", type_="check")
    op.drop_constraint("ck_products_retention_days", "products", type_="check")
    op.drop_column("products", "payload_retention_days")
    op.drop_column("products", "retention_days")

    op.execute("SET LOCAL lock_timeout = '60s'")
    op.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
    op.execute(
        """
        CREATE TABLE events_0001 (
            LIKE events INCLUDING DEFAULTS INCLUDING COMMENTS INCLUDING STORAGE
                INCLUDING COMPRESSION
        )
        """
    )
    op.execute("INSERT INTO events_0001 SELECT * FROM events")
    moved = bind.execute(sa.text("SELECT count(*) FROM events_0001")).scalar_one()
    before = bind.execute(sa.text("SELECT count(*) FROM events")).scalar_one()
    if moved != before:  # pragma: no cover
        raise RuntimeError(f"downgrade copied {moved} of {before} events; rolled back")
    op.execute("DROP TABLE events")  # the partitions go with it
    op.execute("ALTER TABLE events_0001 RENAME TO events")
    op.execute("ALTER TABLE events ADD CONSTRAINT pk_events PRIMARY KEY (product_id, position)")
    op.execute(f"COMMENT ON TABLE events IS {_q(EVENTS_COMMENT)}")
    op.create_index("ix_events_product_id_received_at", "events", ["product_id", "received_at"])
