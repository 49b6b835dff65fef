"""Every query of push mode: endpoints, their cursors, dead letters, the attempts ring, and
the advisory locks that make one process the deliverer of an endpoint.

The event log is the outbox: an endpoint is a cursor over its product's positions, so nothing
is copied when an event is stored, and what is still to deliver is ``position > cursor``.
Functions take the connection they run on; the caller owns the transaction.
"""

from __future__ import annotations

import base64
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from receiver import security
from receiver.delivery.push.destination import PushTarget, redact_url
from receiver.delivery.wire import StreamRow
from receiver.errors import BadRequestError, NotFoundError
from receiver.storage.replication import Seen
from receiver.storage.store import (
    NOTIFY_PRODUCTS,
    PUSH_LOCK_CLASS,
    STREAM_SELECT,
    rows_seen,
    with_seen,
)

APPLICATION_NAME = f"receiver-push {socket.gethostname()[:40]}"


def new_secret() -> str:
    """A Standard Webhooks style secret (``whsec_`` + base64 of 32 random bytes)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


# --------------------------------------------------------------------------- configuration


async def configure(
    conn: asyncpg.Connection, product_id: str, target: PushTarget, *, grace_seconds: float
) -> str | None:
    """Create or update the product's endpoint; returns the secret when the receiver made it.

    A new endpoint starts at the product's current head: it gets the events stored from now
    on. On an existing one the cursor stays where it is; a different secret is a rotation
    (the previous one keeps signing for ``grace_seconds``); no secret keeps the current one.
    """
    row = await conn.fetchrow(
        "SELECT id, secret FROM push_endpoints WHERE product_id = $1 FOR UPDATE", product_id
    )
    generated = None
    if row is None:
        secret = target.secret or new_secret()
        generated = None if target.secret else secret
        await conn.execute(
            """
            INSERT INTO push_endpoints (product_id, url, secret, cursor, max_attempts,
                                        max_age_seconds, max_in_flight)
            SELECT $1, $2, $3, last_position, $4, $5, $6 FROM products WHERE product_id = $1
            """,
            product_id, target.url, secret, target.max_attempts, target.max_age_seconds,
            target.max_in_flight,
        )
    else:
        await conn.execute(
            """
            UPDATE push_endpoints SET url = $2, max_attempts = $3, max_age_seconds = $4,
                   max_in_flight = $5, updated_at = now()
            WHERE product_id = $1
            """,
            product_id, target.url, target.max_attempts, target.max_age_seconds,
            target.max_in_flight,
        )
        if target.secret and not security.equals(target.secret, row["secret"]):
            await _rotate(conn, product_id, target.secret, grace_seconds)
    await _notify(conn, product_id)
    return generated


async def remove(conn: asyncpg.Connection, product_id: str) -> bool:
    """The product is no longer in push mode: its endpoint, dead letters and attempts go."""
    status = await conn.execute("DELETE FROM push_endpoints WHERE product_id = $1", product_id)
    removed = status.split()[-1] != "0"
    if removed:
        await _notify(conn, product_id)
    return removed


async def rotate(
    conn: asyncpg.Connection, product_id: str, *, secret: str | None, grace_seconds: float
) -> str:
    """A new signing secret (``secret``, or a generated one), returned once."""
    async with conn.transaction():
        found = await conn.fetchval(
            "SELECT 1 FROM push_endpoints WHERE product_id = $1 FOR UPDATE", product_id
        )
        if not found:
            raise NotFoundError(f"product {product_id!r} has no push endpoint")
        secret = secret or new_secret()
        await _rotate(conn, product_id, secret, grace_seconds)
        await _notify(conn, product_id)
    return secret


async def _rotate(conn: asyncpg.Connection, product_id: str, secret: str, grace: float) -> None:
    await conn.execute(
        """
        UPDATE push_endpoints SET previous_secret = secret,
               previous_secret_expires_at = now() + make_interval(secs => $3),
               secret = $2, updated_at = now()
        WHERE product_id = $1
        """,
        product_id, secret, float(grace),
    )


async def _notify(conn: asyncpg.Connection, product_id: str) -> None:
    # The products channel: every process re-reads the endpoint (and its directory entry).
    await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_PRODUCTS, product_id)


# --------------------------------------------------------------------------- deliverer state


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What a deliverer needs of its endpoint; secrets never appear in its repr."""

    id: int
    product_id: str
    url: str = field(repr=False)
    secret: str = field(repr=False)
    previous_secret: str | None = field(repr=False)
    previous_expires_at: float | None
    max_attempts: int | None
    max_age_seconds: int | None
    max_in_flight: int | None
    cursor: int
    attempts: int
    first_attempt_at: float | None
    next_attempt_at: float | None
    attempts_logged: int

    def live_secrets(self, now: float) -> tuple[str, ...]:
        """Newest first; the previous secret while its grace period lasts."""
        if self.previous_secret and (self.previous_expires_at or 0) > now:
            return (self.secret, self.previous_secret)
        return (self.secret,)


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _dt(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, tz=UTC) if value is not None else None


async def load(conn: asyncpg.Connection, endpoint_id: int) -> Endpoint | None:
    r = await conn.fetchrow(
        """
        SELECT id, product_id, url, secret, previous_secret, previous_secret_expires_at,
               max_attempts, max_age_seconds, max_in_flight, cursor, attempts,
               first_attempt_at, next_attempt_at, attempts_logged
        FROM push_endpoints WHERE id = $1
        """,
        endpoint_id,
    )
    if r is None:
        return None
    return Endpoint(
        id=r["id"], product_id=r["product_id"], url=r["url"], secret=r["secret"],
        previous_secret=r["previous_secret"],
        previous_expires_at=_ts(r["previous_secret_expires_at"]),
        max_attempts=r["max_attempts"], max_age_seconds=r["max_age_seconds"],
        max_in_flight=r["max_in_flight"], cursor=r["cursor"], attempts=r["attempts"],
        first_attempt_at=_ts(r["first_attempt_at"]), next_attempt_at=_ts(r["next_attempt_at"]),
        attempts_logged=r["attempts_logged"],
    )


async def endpoint_ids(conn: asyncpg.Connection) -> dict[int, str]:
    rows = await conn.fetch("SELECT id, product_id FROM push_endpoints")
    return {r["id"]: r["product_id"] for r in rows}


# With where the read was made, so a synchronous standby can confirm it before anything is sent
# (receiver.storage.replication): a pushed event is out of our hands, and one a failover took
# back would leave the endpoint holding a webhook-id that later names another event.
_READ_EVENTS_SEEN = with_seen(
    STREAM_SELECT + " WHERE product_id = $1 AND position > $2 ORDER BY position LIMIT $3"
)


async def read_events(
    conn: asyncpg.Connection, product_id: str, after: int, limit: int
) -> tuple[list[StreamRow], Seen | None]:
    """Up to ``limit`` events after ``after``, in position order, and where they were read."""
    return rows_seen(await conn.fetch(_READ_EVENTS_SEEN, product_id, after, limit))


async def read_positions(
    conn: asyncpg.Connection, product_id: str, positions: Sequence[int]
) -> dict[int, StreamRow]:
    rows = await conn.fetch(
        STREAM_SELECT + " WHERE product_id = $1 AND position = ANY($2::bigint[])",
        product_id, list(positions),
    )
    return {r["position"]: StreamRow(*r) for r in rows}


async def head_and_more(
    conn: asyncpg.Connection, product_id: str, after: int
) -> tuple[int | None, bool]:
    """The committed head and whether any event lies after ``after``, in one snapshot (commit
    order is position order: a head above ``after`` with nothing stored after it means those
    events were removed)."""
    row = await conn.fetchrow(
        """
        SELECT last_position,
               EXISTS (SELECT 1 FROM events WHERE product_id = $1 AND position > $2)
        FROM products WHERE product_id = $1
        """,
        product_id, after,
    )
    if row is None:
        return None, False
    return int(row[0]), bool(row[1])


async def head(conn: asyncpg.Connection, product_id: str) -> int | None:
    value = await conn.fetchval(
        "SELECT last_position FROM products WHERE product_id = $1", product_id
    )
    return int(value) if value is not None else None


@dataclass(frozen=True, slots=True)
class Redelivery:
    position: int
    attempts: int
    first_attempt_at: float


async def requested_redeliveries(
    conn: asyncpg.Connection, endpoint_id: int, limit: int
) -> list[Redelivery]:
    rows = await conn.fetch(
        """
        SELECT position, attempts, first_attempt_at FROM push_dead_letters
        WHERE endpoint_id = $1 AND retry_requested_at IS NOT NULL
        ORDER BY position LIMIT $2
        """,
        endpoint_id, limit,
    )
    return [Redelivery(r[0], r[1], r[2].timestamp()) for r in rows]


# --------------------------------------------------------------------------- flushing


@dataclass(slots=True)
class EndpointUpdate:
    """A deliverer's progress since its last flush (absolute values, plus increments)."""

    endpoint_id: int
    cursor: int
    attempts: int
    first_attempt_at: float | None
    next_attempt_at: float | None
    last_status: int | None
    last_error: str | None
    last_attempt_at: float | None
    last_success_at: float | None
    delivered: int
    dead: int
    logged: int


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    endpoint_id: int
    seq: int
    position: int
    attempted_at: float
    duration_ms: float
    status: int | None
    error: str | None
    outcome: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    endpoint_id: int
    position: int
    reason: str
    attempts: int
    last_status: int | None
    last_error: str | None
    first_attempt_at: float
    last_attempt_at: float


@dataclass(slots=True)
class Flush:
    updates: list[EndpointUpdate] = field(default_factory=list)
    attempts: list[AttemptRecord] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    redelivered: list[tuple[int, int]] = field(default_factory=list)  # (endpoint, position)

    def __bool__(self) -> bool:
        return bool(self.updates or self.attempts or self.dead or self.redelivered)


# One statement (one round trip, its own transaction): the cursors, the attempts ring, new or
# re-parked dead letters, and the dead letters redelivered. A cursor only moves forward:
# `receiver push skip` may have moved it past the deliverer, whose retry state then no longer
# applies (it learns the new cursor from the RETURNING and catches up).
FLUSH_SQL = """
WITH u AS (
    SELECT * FROM unnest($1::int[], $2::bigint[], $3::int[], $4::timestamptz[],
        $5::timestamptz[], $6::int[], $7::text[], $8::timestamptz[], $9::timestamptz[],
        $10::bigint[], $11::bigint[], $12::bigint[])
    AS u(id, cursor, attempts, first_attempt_at, next_attempt_at, last_status, last_error,
         last_attempt_at, last_success_at, delivered, dead, logged)
), ep AS (
    UPDATE push_endpoints e SET
        cursor = greatest(e.cursor, u.cursor),
        attempts = CASE WHEN u.cursor >= e.cursor THEN u.attempts ELSE 0 END,
        first_attempt_at = CASE WHEN u.cursor >= e.cursor THEN u.first_attempt_at END,
        next_attempt_at = CASE WHEN u.cursor >= e.cursor THEN u.next_attempt_at END,
        last_status = CASE WHEN u.last_attempt_at IS NULL THEN e.last_status
                           ELSE u.last_status END,
        last_error = CASE WHEN u.last_attempt_at IS NULL THEN e.last_error
                          ELSE u.last_error END,
        last_attempt_at = coalesce(u.last_attempt_at, e.last_attempt_at),
        last_success_at = coalesce(u.last_success_at, e.last_success_at),
        delivered_total = e.delivered_total + u.delivered,
        dead_lettered_total = e.dead_lettered_total + u.dead,
        attempts_logged = e.attempts_logged + u.logged,
        updated_at = now()
    FROM u WHERE e.id = u.id
    RETURNING e.id, e.cursor
), att AS (
    INSERT INTO push_attempts (endpoint_id, slot, seq, position, attempted_at, duration_ms,
                               status, error, outcome)
    SELECT a.endpoint_id, (a.seq % $13)::int, a.seq, a.position, a.attempted_at,
           a.duration_ms, a.status, a.error, a.outcome
    FROM unnest($14::int[], $15::bigint[], $16::bigint[], $17::timestamptz[], $18::float8[],
                $19::int[], $20::text[], $21::text[])
        AS a(endpoint_id, seq, position, attempted_at, duration_ms, status, error, outcome)
    WHERE a.endpoint_id IN (SELECT id FROM ep)
    ON CONFLICT (endpoint_id, slot) DO UPDATE SET
        seq = EXCLUDED.seq, position = EXCLUDED.position, attempted_at = EXCLUDED.attempted_at,
        duration_ms = EXCLUDED.duration_ms, status = EXCLUDED.status, error = EXCLUDED.error,
        outcome = EXCLUDED.outcome
), dl AS (
    INSERT INTO push_dead_letters (endpoint_id, position, reason, attempts, last_status,
                                   last_error, first_attempt_at, last_attempt_at)
    SELECT * FROM unnest($22::int[], $23::bigint[], $24::text[], $25::int[], $26::int[],
                         $27::text[], $28::timestamptz[], $29::timestamptz[])
        AS d(endpoint_id, position, reason, attempts, last_status, last_error,
             first_attempt_at, last_attempt_at)
    WHERE d.endpoint_id IN (SELECT id FROM push_endpoints)
    ON CONFLICT (endpoint_id, position) DO UPDATE SET
        reason = EXCLUDED.reason, attempts = EXCLUDED.attempts,
        last_status = EXCLUDED.last_status, last_error = EXCLUDED.last_error,
        last_attempt_at = EXCLUDED.last_attempt_at, dead_at = now(), retry_requested_at = NULL
), done AS (
    DELETE FROM push_dead_letters d
    USING unnest($30::int[], $31::bigint[]) AS x(endpoint_id, position)
    WHERE d.endpoint_id = x.endpoint_id AND d.position = x.position
)
SELECT id, cursor FROM ep
"""


async def flush(conn: asyncpg.Connection, batch: Flush, *, ring: int) -> dict[int, int]:
    """Write one flush; returns every updated endpoint's cursor as stored (a skip may have
    moved it further than the deliverer knew)."""
    ups = batch.updates
    att = _last_per_slot(batch.attempts, ring)
    dead = _last_per_position(batch.dead)
    done = sorted(set(batch.redelivered) - {(d.endpoint_id, d.position) for d in dead})
    rows = await conn.fetch(
        FLUSH_SQL,
        [u.endpoint_id for u in ups], [u.cursor for u in ups], [u.attempts for u in ups],
        [_dt(u.first_attempt_at) for u in ups], [_dt(u.next_attempt_at) for u in ups],
        [u.last_status for u in ups], [u.last_error for u in ups],
        [_dt(u.last_attempt_at) for u in ups], [_dt(u.last_success_at) for u in ups],
        [u.delivered for u in ups], [u.dead for u in ups], [u.logged for u in ups],
        ring,
        [a.endpoint_id for a in att], [a.seq for a in att], [a.position for a in att],
        [_dt(a.attempted_at) for a in att], [a.duration_ms for a in att],
        [a.status for a in att], [a.error for a in att], [a.outcome for a in att],
        [d.endpoint_id for d in dead], [d.position for d in dead], [d.reason for d in dead],
        [d.attempts for d in dead], [d.last_status for d in dead], [d.last_error for d in dead],
        [_dt(d.first_attempt_at) for d in dead], [_dt(d.last_attempt_at) for d in dead],
        [e for e, _p in done], [p for _e, p in done],
    )
    return {r["id"]: r["cursor"] for r in rows}


def _last_per_slot(records: list[AttemptRecord], ring: int) -> list[AttemptRecord]:
    # ON CONFLICT cannot touch one row twice in a statement: only the newest per slot.
    by_slot: dict[tuple[int, int], AttemptRecord] = {}
    for a in records:
        by_slot[(a.endpoint_id, a.seq % ring)] = a
    return list(by_slot.values())


def _last_per_position(records: list[DeadLetter]) -> list[DeadLetter]:
    by_key: dict[tuple[int, int], DeadLetter] = {}
    for d in records:
        by_key[(d.endpoint_id, d.position)] = d
    return list(by_key.values())


async def prune_attempts(conn: asyncpg.Connection, endpoint_id: int, ring: int) -> None:
    """Drop slots beyond the ring (RECEIVER_PUSH_ATTEMPTS_KEPT was lowered)."""
    await conn.execute(
        "DELETE FROM push_attempts WHERE endpoint_id = $1 AND slot >= $2", endpoint_id, ring
    )


# --------------------------------------------------------------------------- locks


async def try_claim(conn: asyncpg.Connection, held: Sequence[int], limit: int = 1000) -> list[int]:
    """Take the advisory lock of every endpoint nobody holds (other than ``held``, ours).

    The candidates are materialized first, so the lock function only ever runs on them (a
    plain WHERE could evaluate it first and lock an endpoint twice, which takes two unlocks).
    """
    rows = await conn.fetch(
        """
        WITH c AS MATERIALIZED (
            SELECT id FROM push_endpoints WHERE id <> ALL($2::int[]) ORDER BY id LIMIT $3
        )
        SELECT id FROM c WHERE pg_try_advisory_lock($1, id)
        """,
        PUSH_LOCK_CLASS, list(held), limit,
    )
    return [r[0] for r in rows]


async def release(conn: asyncpg.Connection, endpoint_id: int) -> None:
    await conn.execute("SELECT pg_advisory_unlock($1, $2)", PUSH_LOCK_CLASS, endpoint_id)


async def holders(conn: asyncpg.Connection) -> dict[int, dict[str, Any]]:
    """Which database session holds each endpoint's lock (its process's application_name)."""
    rows = await conn.fetch(
        """
        SELECT l.objid::bigint::int AS endpoint_id, a.application_name, a.pid,
               a.client_addr::text AS client_addr, a.backend_start
        FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
          AND l.classid::bigint = $1
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        """,
        PUSH_LOCK_CLASS,
    )
    return {
        r["endpoint_id"]: {
            "holder": r["application_name"], "backend_pid": r["pid"],
            "client_addr": r["client_addr"], "since": r["backend_start"],
        }
        for r in rows
    }


# --------------------------------------------------------------------------- management


async def status(conn: asyncpg.Connection, product_id: str | None = None) -> list[dict[str, Any]]:
    """One row per endpoint: where it stands, its lag, failures and dead letters."""
    rows = await conn.fetch(
        """
        SELECT e.id, e.product_id, e.url, e.cursor, p.last_position AS head,
               p.last_position - e.cursor AS lag, e.attempts, e.first_attempt_at,
               e.next_attempt_at, e.last_status, e.last_error, e.last_attempt_at,
               e.last_success_at, e.delivered_total, e.dead_lettered_total,
               e.max_attempts, e.max_age_seconds, e.max_in_flight,
               e.previous_secret IS NOT NULL AND e.previous_secret_expires_at > now()
                   AS rotating,
               (SELECT count(*) FROM push_dead_letters d WHERE d.endpoint_id = e.id)
                   AS dead_letters,
               (SELECT count(*) FROM push_dead_letters d
                 WHERE d.endpoint_id = e.id AND d.retry_requested_at IS NOT NULL)
                   AS retries_queued,
               (SELECT min(d.position) FROM push_dead_letters d WHERE d.endpoint_id = e.id)
                   AS first_dead_position
        FROM push_endpoints e JOIN products p USING (product_id)
        WHERE $1::text IS NULL OR e.product_id = $1
        ORDER BY e.product_id
        """,
        product_id,
    )
    if product_id is not None and not rows:
        raise NotFoundError(f"product {product_id!r} has no push endpoint")
    held = await holders(conn)
    out = []
    for r in rows:
        d = dict(r)
        d["url"] = redact_url(d["url"])
        d["deliverer"] = held.get(r["id"], {}).get("holder")
        d["state"] = _state(d)
        out.append(d)
    return out


def _state(d: dict[str, Any]) -> str:
    if d["deliverer"] is None:
        return "no deliverer"
    if d["attempts"]:
        return "retrying"
    return "delivering" if d["lag"] > 0 else "idle"


async def dead_letters(
    conn: asyncpg.Connection, product_id: str, *, limit: int = 100
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """
        SELECT d.position, d.reason, d.attempts, d.last_status, d.last_error,
               d.first_attempt_at, d.last_attempt_at, d.dead_at, d.retry_requested_at
        FROM push_dead_letters d JOIN push_endpoints e ON e.id = d.endpoint_id
        WHERE e.product_id = $1 ORDER BY d.position LIMIT $2
        """,
        product_id, limit,
    )
    return [dict(r) for r in rows]


async def recent_attempts(
    conn: asyncpg.Connection, product_id: str, *, limit: int = 50
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """
        SELECT a.seq, a.position, a.attempted_at, a.duration_ms, a.status, a.error, a.outcome
        FROM push_attempts a JOIN push_endpoints e ON e.id = a.endpoint_id
        WHERE e.product_id = $1 ORDER BY a.seq DESC LIMIT $2
        """,
        product_id, limit,
    )
    return [dict(r) for r in rows]


def _range(first: int | None, last: int | None) -> tuple[int, int]:
    lo, hi = first or 1, last if last is not None else 2**62
    if lo < 1 or hi < lo:
        raise BadRequestError("the position range must satisfy 1 <= --from <= --to")
    return lo, hi


async def _endpoint_id(conn: asyncpg.Connection, product_id: str) -> int:
    endpoint_id = await conn.fetchval(
        "SELECT id FROM push_endpoints WHERE product_id = $1 FOR UPDATE", product_id
    )
    if endpoint_id is None:
        raise NotFoundError(f"product {product_id!r} has no push endpoint")
    return int(endpoint_id)


async def retry(
    conn: asyncpg.Connection, product_id: str, *, first: int | None = None, last: int | None = None
) -> int:
    """Queue the dead letters in [first, last] for redelivery; returns how many."""
    lo, hi = _range(first, last)
    async with conn.transaction():
        endpoint_id = await _endpoint_id(conn, product_id)
        status = await conn.execute(
            """
            UPDATE push_dead_letters SET retry_requested_at = now()
            WHERE endpoint_id = $1 AND position BETWEEN $2 AND $3
              AND retry_requested_at IS NULL
            """,
            endpoint_id, lo, hi,
        )
        await _notify(conn, product_id)
    return int(status.split()[-1])


async def skip(
    conn: asyncpg.Connection, product_id: str, *, first: int | None = None, last: int | None = None
) -> dict[str, Any]:
    """Give up on [first, last]: its dead letters are dropped, and when the range starts at or
    before the next position to deliver, the cursor jumps to its end (those events are never
    sent). Returns what was done."""
    lo, hi = _range(first, last)
    async with conn.transaction():
        endpoint_id = await _endpoint_id(conn, product_id)
        status = await conn.execute(
            "DELETE FROM push_dead_letters WHERE endpoint_id = $1 AND position BETWEEN $2 AND $3",
            endpoint_id, lo, hi,
        )
        row = await conn.fetchrow(
            """
            SELECT e.cursor, p.last_position FROM push_endpoints e
            JOIN products p USING (product_id) WHERE e.id = $1
            """,
            endpoint_id,
        )
        cursor, head = row["cursor"], row["last_position"]
        moved_to = cursor
        if lo <= cursor + 1 and hi > cursor:
            moved_to = min(hi, head)
            await conn.execute(
                """
                UPDATE push_endpoints SET cursor = $2, attempts = 0, first_attempt_at = NULL,
                       next_attempt_at = NULL, updated_at = now()
                WHERE id = $1 AND cursor < $2
                """,
                endpoint_id, moved_to,
            )
        await _notify(conn, product_id)
    return {
        "product_id": product_id,
        "dead_letters_dropped": int(status.split()[-1]),
        "cursor_before": cursor,
        "cursor_after": max(moved_to, cursor),
        "events_skipped": max(moved_to - cursor, 0),
    }
