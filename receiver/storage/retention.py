"""Partition maintenance and retention for the event log.

``events`` is partitioned by UTC day on ``received_at`` (migration 0002): ``events_pYYYYMMDD``
holds ``[day, day + 1)`` and ``events_default`` catches anything outside the partitions that
exist, so an insert never fails. One :func:`maintain` run:

1. **Creates partitions ahead** (today .. today + ``days_ahead``). Rows that landed in the
   DEFAULT partition (maintenance did not run for a while) are moved into a partition of
   their own day, so the default partition stays empty in normal operation.
2. **Drops whole partitions** older than the longest retention any product needs
   (``RECEIVER_RETENTION_DAYS`` and per-product ``products.retention_days``; 0 = forever, in
   which case nothing is dropped). Dropping is instant and leaves no dead rows.
3. **Deletes rows** of products whose retention is *shorter* than that horizon, in batches.
   This is the price of per-product retention in a table partitioned by time only: it costs
   an index range scan, dead tuples and autovacuum work, where a partition drop costs
   nothing. Per-product overrides are therefore meant for a few products; if most products
   need a short retention, lower the global setting and raise it for the exceptions.
4. **Clears raw payloads** (``payload`` set to NULL, typed columns kept) older than the
   payload retention (``RECEIVER_PAYLOAD_RETENTION_DAYS`` / ``products.payload_retention_days``;
   0 = keep as long as the event). A watermark per product (``retention_state``) makes each
   run touch only rows it has not cleared yet; rows are updated one UTC day at a time.
5. **Prunes dedup keys** (``event_keys``) older than the product's event retention. A
   PostHog redelivery older than that would be accepted again as a new event; PostHog retries
   for minutes to hours, far below any sensible retention.
6. **Prunes session counters** (``session_counters``) of sessions idle for longer than the
   product's event retention plus two days (whole-day partitions outlive the cutoff by up
   to a day), so the table holds live sessions, not every session ever seen. Such a session's
   events are gone; should it ever resume, its ``session_index`` starts again at 0.
7. **Prunes push dead letters** (``push_dead_letters``) whose event retention already removed:
   they could never be sent again, and an endpoint that rejects everything would otherwise
   grow the list with the event volume.

Every run holds a session advisory lock, so several receivers (or ``--workers``) on one
database never maintain concurrently. DDL runs with a short ``lock_timeout``: if ingest or a
stream read holds the table, the step is skipped and retried on the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from receiver.storage.store import NOTIFY_PRODUCTS

log = logging.getLogger("receiver.retention")

PARTITION_RE = re.compile(r"^events_p(\d{8})$")
DEFAULT_PARTITION = "events_default"
ADVISORY_KEY = 0x7265_6365_7276  # "recerv": one maintenance run per database at a time
DDL_LOCK_TIMEOUT = "2s"
BATCH_ROWS = 10_000


@dataclass(frozen=True)
class Policy:
    """Global retention settings (per-product overrides live in ``products``)."""

    retention_days: int = 30  # 0 = keep forever
    payload_retention_days: int = 0  # 0 = keep the payload as long as the event
    days_ahead: int = 3


def policy_from(settings: Any) -> Policy:
    """The global policy from :class:`receiver.settings.Settings`."""
    return Policy(
        retention_days=settings.retention_days,
        payload_retention_days=settings.payload_retention_days,
        days_ahead=settings.partitions_ahead_days,
    )


@dataclass
class Report:
    skipped: bool = False  # another maintenance run held the lock
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    moved_from_default: int = 0
    deleted: dict[str, int] = field(default_factory=dict)  # per product, per-product retention
    payloads_cleared: dict[str, int] = field(default_factory=dict)
    keys_pruned: int = 0
    sessions_pruned: int = 0
    dead_letters_pruned: int = 0
    lock_timeouts: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "skipped": self.skipped, "created": self.created, "dropped": self.dropped,
            "moved_from_default": self.moved_from_default, "deleted": self.deleted,
            "payloads_cleared": self.payloads_cleared, "keys_pruned": self.keys_pruned,
            "sessions_pruned": self.sessions_pruned,
            "dead_letters_pruned": self.dead_letters_pruned, "lock_timeouts": self.lock_timeouts,
        }


def partition_name(day: date) -> str:
    return f"events_p{day:%Y%m%d}"


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _ident(name: str) -> str:
    # Our own names only (events_pYYYYMMDD / events_default / role names via quote_ident).
    return '"' + name.replace('"', '""') + '"'


async def partitions(conn: asyncpg.Connection) -> dict[str, date | None]:
    """Partitions of ``events``: name -> day (None for the default or foreign partitions)."""
    rows = await conn.fetch(
        """
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'events'::regclass AND c.relkind IN ('r', 'p')
        """
    )
    out: dict[str, date | None] = {}
    for r in rows:
        m = PARTITION_RE.match(r["relname"])
        out[r["relname"]] = datetime.strptime(m.group(1), "%Y%m%d").date() if m else None
    return out


async def _select_grantees(conn: asyncpg.Connection) -> list[str]:
    """Roles holding SELECT on ``events`` (``receiver db grant-readonly``), owner excluded."""
    rows = await conn.fetch(
        """
        SELECT DISTINCT a.grantee::regrole::text AS role
        FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.oid = 'events'::regclass AND a.privilege_type = 'SELECT'
          AND a.grantee <> 0 AND a.grantee <> c.relowner
        """
    )
    return [r["role"] for r in rows]


async def create_partition(conn: asyncpg.Connection, day: date) -> int:
    """Create the partition for ``day``; returns rows moved into it from the default partition.

    Read-only roles that can SELECT from ``events`` get SELECT on the new partition too, so
    analysts can query a partition directly (selecting through ``events`` never needs it).
    """
    name = partition_name(day)
    start, end = day_start(day), day_start(day) + timedelta(days=1)
    bounds = f"FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
    moved = 0
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT}'")
        # Lock the default partition first: no insert can land in it for this day while
        # we move its rows out and attach the new partition.
        await conn.execute(f"LOCK TABLE {DEFAULT_PARTITION} IN ACCESS EXCLUSIVE MODE")
        strays = await conn.fetchval(
            f"SELECT count(*) FROM {DEFAULT_PARTITION} "  # noqa: S608 - constant name
            "WHERE received_at >= $1 AND received_at < $2",
            start, end,
        )
        if not strays:
            await conn.execute(f"CREATE TABLE {name} PARTITION OF events FOR VALUES {bounds}")
        else:
            await conn.execute(
                f"CREATE TABLE {name} (LIKE events INCLUDING DEFAULTS INCLUDING STORAGE "
                "INCLUDING COMPRESSION)"
            )
            status = await conn.execute(
                f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} "  # noqa: S608
                "WHERE received_at >= $1 AND received_at < $2 RETURNING *) "
                f"INSERT INTO {name} SELECT * FROM moved",
                start, end,
            )
            moved = int(status.split()[-1])
            # The CHECK lets ATTACH skip scanning the new partition.
            await conn.execute(
                f"ALTER TABLE {name} ADD CONSTRAINT {name}_bounds CHECK "
                f"(received_at >= '{start.isoformat()}' AND received_at < '{end.isoformat()}')"
            )
            await conn.execute(f"ALTER TABLE events ATTACH PARTITION {name} FOR VALUES {bounds}")
            await conn.execute(f"ALTER TABLE {name} DROP CONSTRAINT {name}_bounds")
        await conn.execute(
            f"COMMENT ON TABLE {name} IS 'events received on {day.isoformat()} (UTC); "
            "dropped whole by retention.'"
        )
        for role in await _select_grantees(conn):
            await conn.execute(f"GRANT SELECT ON {name} TO {_ident(role)}")
    return moved


async def drop_partition(conn: asyncpg.Connection, name: str) -> None:
    if not PARTITION_RE.match(name):
        raise ValueError(f"not an events day partition: {name!r}")
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT}'")
        await conn.execute(f"DROP TABLE {name}")


async def _product_policies(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT product_id, retention_days, payload_retention_days FROM products "
        "ORDER BY product_id"
    )


def horizon_days(policy: Policy, overrides: list[int | None]) -> int | None:
    """Days whole partitions are kept: the longest effective retention; None = forever."""
    effective = [policy.retention_days, *(o if o is not None else policy.retention_days for o in overrides)]
    if 0 in effective:
        return None
    return max(effective)


async def _batched(conn: asyncpg.Connection, sql: str, *args: Any) -> int:
    total = 0
    while True:
        status = await conn.execute(sql, *args, BATCH_ROWS)
        n = int(status.split()[-1])
        total += n
        if n < BATCH_ROWS:
            return total


async def delete_product_before(conn: asyncpg.Connection, product_id: str, cutoff: datetime) -> int:
    return await _batched(
        conn,
        """
        DELETE FROM events WHERE (product_id, position, received_at) IN (
            SELECT product_id, position, received_at FROM events
            WHERE product_id = $1 AND received_at < $2 LIMIT $3)
        """,
        product_id, cutoff,
    )


async def clear_payloads(conn: asyncpg.Connection, product_id: str, cutoff: datetime) -> int:
    """Set payload to NULL for the product's events received before ``cutoff``."""
    mark = await conn.fetchval(
        "SELECT payload_cleared_before FROM retention_state WHERE product_id = $1", product_id
    )
    if mark is None:
        mark = await conn.fetchval(
            "SELECT min(received_at) FROM events WHERE product_id = $1", product_id
        )
        if mark is None:
            mark = cutoff
    cleared = 0
    while mark < cutoff:
        upto = min(cutoff, day_start(mark.astimezone(UTC).date()) + timedelta(days=1))
        async with conn.transaction():
            status = await conn.execute(
                "UPDATE events SET payload = NULL WHERE product_id = $1 "
                "AND received_at >= $2 AND received_at < $3 AND payload IS NOT NULL",
                product_id, mark, upto,
            )
            cleared += int(status.split()[-1])
            await _set_mark(conn, product_id, upto)
        mark = upto
    if cleared == 0:
        await _set_mark(conn, product_id, cutoff)
    return cleared


async def _set_mark(conn: asyncpg.Connection, product_id: str, mark: datetime) -> None:
    await conn.execute(
        """
        INSERT INTO retention_state (product_id, payload_cleared_before) VALUES ($1, $2)
        ON CONFLICT (product_id) DO UPDATE SET payload_cleared_before =
            greatest(retention_state.payload_cleared_before, EXCLUDED.payload_cleared_before)
        """,
        product_id, mark,
    )


async def prune_keys(conn: asyncpg.Connection, product_id: str, cutoff: datetime) -> int:
    return await _batched(
        conn,
        """
        DELETE FROM event_keys WHERE (product_id, dedup_key) IN (
            SELECT product_id, dedup_key FROM event_keys
            WHERE product_id = $1 AND received_at < $2 LIMIT $3)
        """,
        product_id, cutoff,
    )


# A day partition is dropped once the whole day is past the horizon, so a session's last
# events can outlive the cutoff by up to a day; two days keep its counter until they are gone.
SESSION_MARGIN = timedelta(days=2)


async def prune_sessions(conn: asyncpg.Connection, product_id: str, idle_since: datetime) -> int:
    # One statement, one range scan of the product's counters (batching would rescan it).
    status = await conn.execute(
        "DELETE FROM session_counters WHERE product_id = $1 AND last_seen_at < $2",
        product_id, idle_since,
    )
    return int(status.split()[-1])


async def maintain(
    conn: asyncpg.Connection, policy: Policy, *, now: datetime | None = None
) -> Report:
    """One maintenance run (see the module docstring). Safe to run at any time, repeatedly."""
    report = Report()
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", ADVISORY_KEY):
        report.skipped = True
        return report
    try:
        await _maintain(conn, policy, now or datetime.now(UTC), report)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_KEY)
    return report


async def _maintain(conn: asyncpg.Connection, policy: Policy, now: datetime, report: Report) -> None:
    today = now.astimezone(UTC).date()
    prods = await _product_policies(conn)
    keep = horizon_days(policy, [p["retention_days"] for p in prods])
    horizon = day_start(today) - timedelta(days=keep) if keep is not None else None

    # 1. Partitions ahead, and a home for anything that fell into the default partition.
    existing = await partitions(conn)
    have = {d for d in existing.values() if d is not None}
    wanted = {today + timedelta(days=i) for i in range(policy.days_ahead + 1)}
    stray_days = await conn.fetch(
        f"SELECT DISTINCT (received_at AT TIME ZONE 'UTC')::date AS day FROM {DEFAULT_PARTITION}"  # noqa: S608
    )
    for r in stray_days:
        if horizon is None or day_start(r["day"]) + timedelta(days=1) > horizon:
            wanted.add(r["day"])
    for day in sorted(wanted - have):
        try:
            report.moved_from_default += await create_partition(conn, day)
            report.created.append(partition_name(day))
        except (asyncpg.LockNotAvailableError, asyncpg.DuplicateTableError) as exc:
            report.lock_timeouts.append(f"create {partition_name(day)}: {type(exc).__name__}")

    # 2. Whole partitions past the horizon, and expired rows in the default partition.
    if horizon is not None:
        for name, day in sorted(existing.items(), key=lambda kv: kv[0]):
            if day is not None and day_start(day) + timedelta(days=1) <= horizon:
                try:
                    await drop_partition(conn, name)
                    report.dropped.append(name)
                except asyncpg.LockNotAvailableError:
                    report.lock_timeouts.append(f"drop {name}")
        await _batched(
            conn,
            f"DELETE FROM {DEFAULT_PARTITION} WHERE ctid IN ("  # noqa: S608
            f"SELECT ctid FROM {DEFAULT_PARTITION} WHERE received_at < $1 LIMIT $2)",
            horizon,
        )

    # 3-5. Per product: shorter retention, payload retention, dedup keys.
    for p in prods:
        pid = p["product_id"]
        days = p["retention_days"] if p["retention_days"] is not None else policy.retention_days
        if days > 0:
            cutoff = now - timedelta(days=days)
            if keep is None or days < keep:
                n = await delete_product_before(conn, pid, cutoff)
                if n:
                    report.deleted[pid] = n
            report.keys_pruned += await prune_keys(conn, pid, cutoff)
            report.sessions_pruned += await prune_sessions(conn, pid, cutoff - SESSION_MARGIN)
        payload_days = p["payload_retention_days"]
        if payload_days is None:
            payload_days = policy.payload_retention_days
        if payload_days > 0 and (days == 0 or payload_days < days):
            n = await clear_payloads(conn, pid, now - timedelta(days=payload_days))
            if n:
                report.payloads_cleared[pid] = n

    # 7. Dead letters of events that are gone.
    report.dead_letters_pruned = await prune_dead_letters(conn)


async def prune_dead_letters(conn: asyncpg.Connection) -> int:
    """Drop the dead letters below each product's oldest stored event (none stored: below its
    next position), whose payloads can never be built again."""
    status = await conn.execute(
        """
        DELETE FROM push_dead_letters d USING push_endpoints e, products p
        WHERE e.id = d.endpoint_id AND p.product_id = e.product_id
          AND d.position < coalesce(
              (SELECT min(ev.position) FROM events ev WHERE ev.product_id = e.product_id),
              p.last_position + 1)
        """
    )
    return int(status.split()[-1])


async def erase(
    conn: asyncpg.Connection, distinct_id: str, product_id: str | None = None
) -> dict[str, int]:
    """Delete one person's events: every event with this distinct_id, and every other event of
    the sessions they appear in (the anonymous events before identify() share the session).

    Dedup keys stay: they are uuids or payload hashes and hold no personal data, and keeping
    them stops a late PostHog redelivery from bringing an erased event back. Running
    receivers are told (``receiver_products`` notification) to drop the stream frames they
    cache for the affected products.
    """
    async with conn.transaction():
        mates = await conn.fetch(
            """
            WITH gone AS (
                DELETE FROM events e USING (
                    SELECT DISTINCT product_id, session_id FROM events
                    WHERE distinct_id = $1 AND session_id IS NOT NULL
                      AND ($2::text IS NULL OR product_id = $2)
                ) s
                WHERE e.product_id = s.product_id AND e.session_id = s.session_id
                  AND e.distinct_id IS DISTINCT FROM $1
                RETURNING e.product_id
            )
            SELECT product_id, count(*) AS n FROM gone GROUP BY product_id
            """,
            distinct_id, product_id,
        )
        own = await conn.fetch(
            """
            WITH gone AS (
                DELETE FROM events WHERE distinct_id = $1 AND ($2::text IS NULL OR product_id = $2)
                RETURNING product_id
            )
            SELECT product_id, count(*) AS n FROM gone GROUP BY product_id
            """,
            distinct_id, product_id,
        )
        for pid in sorted({r["product_id"] for r in (*mates, *own)}):
            await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_PRODUCTS, pid)
    return {
        "events": sum(r["n"] for r in own),
        "session_events": sum(r["n"] for r in mates),
    }


# --------------------------------------------------------------------------- in the receiver


async def run_forever(pool: asyncpg.Pool, policy: Policy, interval: float) -> None:
    """The receiver's background task: one run at start, then every ``interval`` seconds."""
    while True:
        try:
            async with pool.acquire() as conn:
                report = await maintain(conn, policy)
            if not report.skipped and (
                report.created or report.dropped or report.deleted or report.payloads_cleared
                or report.keys_pruned or report.sessions_pruned or report.moved_from_default
                or report.lock_timeouts
            ):
                log.info("maintenance: %s", report.as_dict())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - maintenance must never take the receiver down
            log.warning("maintenance failed (retrying in %.0fs): %r", interval, exc)
        await asyncio.sleep(interval)


def start_background(pool: asyncpg.Pool, policy: Policy, interval: float) -> asyncio.Task[None] | None:
    if interval <= 0:
        return None
    return asyncio.create_task(run_forever(pool, policy, interval), name="retention")


async def stop_background(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
