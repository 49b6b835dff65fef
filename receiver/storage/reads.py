"""The queries agents run (live activity, sessions, who did what): read-only and bounded.

They run on the runtime's read pool, whose sessions are ``default_transaction_read_only`` with a
``statement_timeout`` (``RECEIVER_READ_TIMEOUT_MS``), so none can write and none runs long; each
also caps the rows it reads. Internal events (``$identify``, …) are never read here: the stream
does not send them either.

Each read also returns where it was made (:class:`~receiver.storage.replication.Seen`: server,
WAL position, whether a synchronous standby is configured), so the caller can have the standby
confirm it before serving the rows: an agent must not be told about an event a failover could
take back, any more than a stream subscriber.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from receiver.delivery.wire import StreamRow
from receiver.storage.replication import SEEN_COLUMNS, Seen
from receiver.storage.store import STREAM_SELECT, rows_seen, with_seen

# The most rows one sessions / users query reads before grouping (newest first).
SCAN_CAP = 5000
SEARCH_CAP = 50_000

# Served by ix_events_live_activity (product_id, distinct_id) WHERE action_type <> 'internal':
# the user's rows in the window (the received_at bound prunes every older partition), then the
# newest $4 of them. So a read costs the user's rows in the window, whatever the table holds:
# 0.04 ms for 75 rows, 9 ms for a user with 50,000 (docs/performance.md). A key per event would
# stop at the limit but cost ingest far more.
_LIVE_TAIL = """
  AND action_type <> 'internal' AND received_at >= $3
ORDER BY position DESC
LIMIT $4
"""
LIVE_ACTIVITY_SQL = STREAM_SELECT + "WHERE product_id = $1 AND distinct_id = $2" + _LIVE_TAIL
# The same for a user stored under two ids (an email address, and its hash since a policy change).
LIVE_ACTIVITY_ANY_SQL = (
    STREAM_SELECT + "WHERE product_id = $1 AND distinct_id = ANY($2::text[])" + _LIVE_TAIL
)


# What a one-id read runs (and what the bench EXPLAINs), with where it was read.
LIVE_ACTIVITY_SEEN_SQL = with_seen(LIVE_ACTIVITY_SQL, "DESC")
_LIVE_ANY_SEEN = with_seen(LIVE_ACTIVITY_ANY_SQL, "DESC")


async def live_activity(
    conn: asyncpg.Connection, product_id: str, user_ids: list[str], since: datetime, limit: int
) -> tuple[list[StreamRow], Seen | None]:
    """A user's newest ``limit`` actions received since ``since``, oldest first, and where they
    were read (None when there were none)."""
    if len(user_ids) == 1:
        rows = await conn.fetch(LIVE_ACTIVITY_SEEN_SQL, product_id, user_ids[0], since, limit)
    else:
        rows = await conn.fetch(_LIVE_ANY_SEEN, product_id, user_ids, since, limit)
    newest_first, seen = rows_seen(rows)
    return newest_first[::-1], seen


async def recent_rows(
    conn: asyncpg.Connection, product_id: str, user_ids: list[str], since: datetime
) -> tuple[list[StreamRow], Seen | None]:
    """Up to :data:`SCAN_CAP` of a user's newest actions since ``since``, oldest first."""
    return await live_activity(conn, product_id, user_ids, since, SCAN_CAP)


@dataclass(frozen=True, slots=True)
class UserMatch:
    distinct_id: str
    matches: int
    last_at: float
    last_title: str
    last_page: str | None


async def find_users(
    conn: asyncpg.Connection,
    product_id: str,
    *,
    since: datetime,
    action: str | None,
    text_like: str | None,
    page_like: str | None,
    limit: int,
) -> tuple[list[UserMatch], Seen | None]:
    """Users with actions matching every given filter since ``since``, most recent first, and
    where they were read.

    ``text_like`` / ``page_like`` are ILIKE patterns the caller escaped (see :func:`like`).
    """
    rows = await conn.fetch(
        """
        SELECT distinct_id, count(*)::int, extract(epoch FROM max(occurred_at))::float8,
               (array_agg(title ORDER BY position DESC))[1],
               (array_agg(canonical_url ORDER BY position DESC))[1]
        FROM (
            SELECT distinct_id, occurred_at, title, canonical_url, position FROM events
            WHERE product_id = $1 AND received_at >= $2 AND action_type <> 'internal'
              AND distinct_id IS NOT NULL
              AND ($3::text IS NULL OR action_type = $3)
              AND ($4::text IS NULL OR element_text ILIKE $4 OR title ILIKE $4)
              AND ($5::text IS NULL OR canonical_url ILIKE $5)
            ORDER BY position DESC
            LIMIT $7
        ) m
        GROUP BY distinct_id
        ORDER BY max(position) DESC
        LIMIT $6
        """,
        product_id, since, action, text_like, page_like, limit, SEARCH_CAP,
    )
    if not rows:
        return [], None
    # A later statement of the same session: its WAL position is past what the search saw.
    seen = Seen.of(await conn.fetchrow(f"SELECT {SEEN_COLUMNS}"))
    return [UserMatch(*r) for r in rows], seen


def like(text: str) -> str:
    """An ILIKE pattern matching ``text`` anywhere, its own wildcards taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
