"""The Postgres schema (the analysts' contract) and every query the receiver runs.

Tables are declared here with SQLAlchemy Core so Alembic can check migrations against them;
the hot paths (append, stream pages) run as prepared asyncpg statements on a shared pool.
Functions take the connection they run on: callers own transactions. Driver exceptions are
mapped to :class:`receiver.errors.UnavailableError` in :func:`unavailable`, so the HTTP layer
can answer 503 without knowing about asyncpg.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from receiver.delivery.wire import StreamRow
from receiver.errors import NotFoundError, UnavailableError
from receiver.ingest.normalize import NormalizedEvent
from receiver.storage import dsn
from receiver.storage.replication import SEEN_COLUMNS, Seen

NOTIFY_EVENTS = "receiver_events"
NOTIFY_PRODUCTS = "receiver_products"

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Column comments are the documented contract for SQL analysts (also rendered in README.md).
EVENT_COLUMNS: dict[str, str] = {
    "product_id": "Product the event belongs to (the {product_id} of the webhook or stream URL).",
    "position": "Per-product stream position: 1, 2, 3, ... with no gaps, in commit order. "
    "The SSE id; resume with ?since=<position>.",
    "received_at": "When the receiver accepted the event (UTC). Also the frame's forwarded_at.",
    "occurred_at": "When the event happened on the client (PostHog timestamp, UTC; "
    "clamped to received_at when missing or more than 23 h in the future).",
    "source": "How the event arrived: 'webhook' (a PostHog destination, at /webhook or /ingest), "
    "'capture' (posthog-js straight to the receiver) or 'amplitude' (Amplitude Event Streaming "
    "to /ingest).",
    "event": "PostHog event name: $autocapture, $pageview, $rageclick, or a custom name.",
    "action_type": "What the user did: pageview, click, submit, type, copy, custom, "
    "or internal (SDK bookkeeping such as $identify; stored but never streamed).",
    "event_uuid": "PostHog event uuid when the payload carried a valid one.",
    "dedup_key": "Deduplication key: 'u:<uuid>', or 'h:<sha256 of the payload>' without uuid.",
    "session_id": "PostHog $session_id.",
    "distinct_id": "PostHog distinct_id: the identify() id once the user is identified. "
    "Streamed as user_id.",
    "email": "The email super property registered with posthog.register({email}).",
    "current_url": "Full page URL as captured ($current_url), query and fragment included.",
    "canonical_url": "current_url without query or fragment, dynamic path segments "
    "(numbers, UUIDs, hex, random tokens) replaced by :id.",
    "pathname": "Path of current_url.",
    "referrer": "PostHog $referrer ('$direct' when there was none).",
    "element_tag": "Tag of the clicked element (element 0 of elements_chain).",
    "element_id": "id attribute of the clicked element itself (never an ancestor's).",
    "element_text": "Text a person would read on what was clicked: $el_text, the element's "
    "text, or that of the enclosing button or link.",
    "input_name": "name attribute of the clicked or changed element.",
    "link_target": "href of the clicked link (or of the link enclosing the clicked element).",
    "title": "Short label, e.g. 'Click Invite member button', 'Page Load: Billing'.",
    "description": "Sentence the LLM sees, e.g. 'User clicked Invite member button on the "
    "team page'.",
    "session_index": "0-based index of the event within its session (the SDK's action index).",
    "payload": "The raw body as received (JSON).",
    "conversation_id": "Chat conversation the session was linked to (POST /sessions/link) when "
    "the event was stored; NULL for events stored before the link.",
}

products = sa.Table(
    "products",
    metadata,
    sa.Column("product_id", sa.Text, primary_key=True, comment="Product identifier."),
    sa.Column("contact_email", sa.Text, nullable=False, comment="Who to contact about it."),
    sa.Column("integration_type", sa.Text, nullable=False, server_default="event_stream"),
    sa.Column("integration_config", pg.JSONB, nullable=False, server_default=sa.text("'{}'")),
    sa.Column(
        "capture_token", sa.Text, nullable=False, unique=True,
        comment="Public token posthog-js sends to the capture endpoints.",
    ),
    sa.Column(
        "last_position", sa.BigInteger, nullable=False, server_default="0",
        comment="Position of the newest committed event; its row lock orders commits.",
    ),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column(
        "retention_days", sa.Integer, nullable=True,
        comment="Days events are kept; NULL = RECEIVER_RETENTION_DAYS, 0 = forever.",
    ),
    sa.Column(
        "payload_retention_days", sa.Integer, nullable=True,
        comment="Days the raw payload is kept (then set to NULL, typed columns stay); "
        "NULL = RECEIVER_PAYLOAD_RETENTION_DAYS, 0 = as long as the event.",
    ),
    sa.CheckConstraint("retention_days >= 0", name="retention_days"),
    sa.CheckConstraint("payload_retention_days >= 0", name="payload_retention_days"),
    sa.Column(
        "privacy_policy", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb"),
        comment="PII policy applied before anything is stored or streamed (receiver.privacy); "
        "{} = the default.",
    ),
    sa.CheckConstraint("jsonb_typeof(privacy_policy) = 'object'", name="privacy_policy"),
    # Registration by analytics project id (autoplay-sdk 0.13.0's onboard_product; migration 0005).
    sa.Column(
        "provider", sa.Text,
        comment="Analytics provider of a product registered by project id: posthog or amplitude "
        "(NULL for products registered with a product_id of their own).",
    ),
    sa.Column(
        "provider_project_id", sa.Text,
        comment="The PostHog or Amplitude project id it was registered with; "
        "(provider, provider_project_id) names one product.",
    ),
    sa.Column("name", sa.Text, comment="Display name given at registration (optional)."),
    sa.Column(
        "owner_token_sha256", sa.LargeBinary,
        comment="SHA-256 of the owner token returned once at registration by project id; "
        "re-registering the project without it is refused.",
    ),
    sa.CheckConstraint("provider IN ('posthog', 'amplitude')", name="provider"),
    sa.CheckConstraint("(provider IS NULL) = (provider_project_id IS NULL)", name="provider_project"),
    sa.UniqueConstraint("provider", "provider_project_id"),
    sa.Column(
        "session_link", sa.Text, nullable=False, server_default="token",
        comment="Who may call POST /sessions/link for this product: 'token' (the request carries "
        "the product's capture token), 'open' (anyone, like the hosted connector) or 'off'.",
    ),
    sa.CheckConstraint("session_link IN ('token', 'open', 'off')", name="session_link"),
    comment="Registered products.",
)

credentials = sa.Table(
    "credentials",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
    sa.Column(
        "product_id", sa.Text,
        sa.ForeignKey("products.product_id", ondelete="CASCADE"), nullable=False, index=True,
    ),
    sa.Column(
        "kind", sa.Text, nullable=False,
        comment="webhook_secret (also the ingest secret), stream_key or mcp_key.",
    ),
    sa.Column("key_id", sa.Text, nullable=False, unique=True, comment="Public id of the credential."),
    sa.Column(
        "secret_sha256", sa.LargeBinary, nullable=False, index=True,
        comment="SHA-256 of the secret.",
    ),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column(
        "expires_at", sa.DateTime(timezone=True), nullable=True,
        comment="Set when rotated: the old credential keeps working until then.",
    ),
    sa.CheckConstraint("kind IN ('webhook_secret', 'stream_key', 'mcp_key')", name="kind"),
    comment="Hashed webhook secrets and stream keys. Plain values are never stored.",
)

event_keys = sa.Table(
    "event_keys",
    metadata,
    sa.Column("product_id", sa.Text, primary_key=True),
    sa.Column("dedup_key", sa.Text, primary_key=True),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, index=True),
    # Pruned with the event retention (receiver.storage.retention).
    comment="Deduplication keys of accepted events (PostHog delivers at least once).",
)

session_counters = sa.Table(
    "session_counters",
    metadata,
    sa.Column("product_id", sa.Text, primary_key=True),
    sa.Column("session_id", sa.Text, primary_key=True),
    sa.Column("next_index", sa.Integer, nullable=False),
    sa.Column(
        "last_seen_at", sa.DateTime(timezone=True), nullable=False,
        server_default=sa.text("now()"),
        comment="When the session last had an event (pruned after the product's retention).",
    ),
    sa.Column(
        "conversation_id", sa.Text, nullable=True,
        comment="Chat conversation linked to the session (POST /sessions/link); copied into every "
        "event of the session stored from then on.",
    ),
    comment="Next per-session action index, and the session's linked conversation.",
)

retention_state = sa.Table(
    "retention_state",
    metadata,
    sa.Column(
        "product_id", sa.Text,
        sa.ForeignKey("products.product_id", ondelete="CASCADE"), primary_key=True,
    ),
    sa.Column(
        "payload_cleared_before", sa.DateTime(timezone=True), nullable=False,
        comment="Every payload received before this time has been cleared.",
    ),
    comment="Progress of payload retention per product (maintenance bookkeeping).",
)

server_secrets = sa.Table(
    "server_secrets",
    metadata,
    sa.Column("name", sa.Text, primary_key=True, comment="What the key is for."),
    sa.Column("secret", sa.LargeBinary, nullable=False, comment="Random key bytes."),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False,
        server_default=sa.func.now(), comment="When the first receiver generated it.",
    ),
    comment="Random keys generated once and shared by every receiver process (never logged).",
)

# Push mode (receiver.delivery.push). The event log is the outbox: an endpoint is a cursor over
# its product's positions, with no copy of the events; what could not be delivered is listed in
# push_dead_letters; the last attempts are kept in a fixed ring of slots per endpoint.
PUSH_LOCK_CLASS = 0x70757368  # 'push': first key of every deliverer's advisory lock
_TS = sa.DateTime(timezone=True)

push_endpoints = sa.Table(
    "push_endpoints",
    metadata,
    sa.Column(
        "id", sa.Integer, sa.Identity(always=True), primary_key=True,
        comment="Endpoint id; also the second key of its deliverer's advisory lock.",
    ),
    sa.Column(
        "product_id", sa.Text,
        sa.ForeignKey("products.product_id", ondelete="CASCADE"), nullable=False, unique=True,
        comment="Product whose events are pushed (one endpoint per product).",
    ),
    sa.Column(
        "url", sa.Text, nullable=False,
        comment="Destination URL. It may carry credentials: never logged, shown redacted.",
    ),
    sa.Column(
        "secret", sa.Text, nullable=False,
        comment="Signing secret, stored as given: every request is signed with it, so it cannot "
        "be hashed. Never returned after registration, never logged.",
    ),
    sa.Column(
        "previous_secret", sa.Text,
        comment="The secret before the last rotation: requests carry signatures made with both "
        "until previous_secret_expires_at.",
    ),
    sa.Column("previous_secret_expires_at", _TS, comment="End of the rotation's grace period."),
    sa.Column(
        "cursor", sa.BigInteger, nullable=False,
        comment="Position of the last event delivered, dead-lettered or skipped; delivery "
        "resumes after it.",
    ),
    sa.Column(
        "max_attempts", sa.Integer,
        comment="Attempts per payload before it is dead-lettered; NULL = RECEIVER_PUSH_MAX_ATTEMPTS.",
    ),
    sa.Column(
        "max_age_seconds", sa.Integer,
        comment="Seconds after its first attempt a failing payload is dead-lettered; "
        "NULL = RECEIVER_PUSH_MAX_AGE_SECONDS.",
    ),
    sa.Column(
        "max_in_flight", sa.Integer,
        comment="Requests out at once (never two of one session); 1 = one at a time, in "
        "position order. NULL = RECEIVER_PUSH_MAX_IN_FLIGHT.",
    ),
    sa.Column(
        "attempts", sa.Integer, nullable=False, server_default="0",
        comment="Failed attempts so far of the payload after cursor (0: none failed).",
    ),
    sa.Column("first_attempt_at", _TS, comment="First attempt of the payload being retried."),
    sa.Column("next_attempt_at", _TS, comment="When the payload being retried is tried again."),
    sa.Column(
        "last_status", sa.Integer,
        comment="HTTP status of the last attempt; NULL when there was no answer (see last_error).",
    ),
    sa.Column("last_error", sa.Text, comment="Why the last failed attempt failed."),
    sa.Column("last_attempt_at", _TS, comment="Time of the last attempt."),
    sa.Column("last_success_at", _TS, comment="Time of the last 2xx answer."),
    sa.Column(
        "delivered_total", sa.BigInteger, nullable=False, server_default="0",
        comment="Payloads answered with a 2xx.",
    ),
    sa.Column(
        "dead_lettered_total", sa.BigInteger, nullable=False, server_default="0",
        comment="Payloads moved to push_dead_letters.",
    ),
    sa.Column(
        "attempts_logged", sa.BigInteger, nullable=False, server_default="0",
        comment="Attempts recorded in push_attempts so far (numbers them).",
    ),
    sa.Column("created_at", _TS, nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", _TS, nullable=False, server_default=sa.func.now()),
    sa.CheckConstraint("cursor >= 0", name="cursor"),
    sa.CheckConstraint("max_attempts IS NULL OR max_attempts >= 1", name="max_attempts"),
    sa.CheckConstraint("max_age_seconds IS NULL OR max_age_seconds >= 1", name="max_age_seconds"),
    sa.CheckConstraint("max_in_flight IS NULL OR max_in_flight >= 1", name="max_in_flight"),
    comment="Push destinations (push mode): where each product's payloads are POSTed, and a "
    "durable cursor over its event positions.",
)

push_dead_letters = sa.Table(
    "push_dead_letters",
    metadata,
    sa.Column(
        "endpoint_id", sa.Integer,
        sa.ForeignKey("push_endpoints.id", ondelete="CASCADE"), primary_key=True,
        comment="The push endpoint (push_endpoints.id).",
    ),
    sa.Column(
        "position", sa.BigInteger, primary_key=True,
        comment="Position of the event whose payload was not delivered (events.position).",
    ),
    sa.Column(
        "reason", sa.Text, nullable=False,
        comment="'rejected' (an answer that is not retried, e.g. 400), 'attempts' (too many "
        "failed attempts) or 'age' (failing for too long).",
    ),
    sa.Column("attempts", sa.Integer, nullable=False, comment="Attempts made, retries included."),
    sa.Column("last_status", sa.Integer, comment="HTTP status of the last attempt, if any."),
    sa.Column("last_error", sa.Text, comment="Why the last attempt failed."),
    sa.Column("first_attempt_at", _TS, nullable=False, comment="Time of the first attempt."),
    sa.Column("last_attempt_at", _TS, nullable=False, comment="Time of the last attempt."),
    sa.Column(
        "dead_at", _TS, nullable=False, server_default=sa.func.now(),
        comment="When the payload was (last) given up on.",
    ),
    sa.Column(
        "retry_requested_at", _TS,
        comment="Set by `receiver push retry`: the deliverer sends it again (row deleted once "
        "delivered). NULL = parked.",
    ),
    sa.CheckConstraint("reason IN ('rejected', 'attempts', 'age')", name="reason"),
    comment="Payloads that push delivery gave up on; `receiver push retry` sends them again.",
)

push_attempts = sa.Table(
    "push_attempts",
    metadata,
    sa.Column(
        "endpoint_id", sa.Integer,
        sa.ForeignKey("push_endpoints.id", ondelete="CASCADE"), primary_key=True,
        comment="The push endpoint (push_endpoints.id).",
    ),
    sa.Column(
        "slot", sa.Integer, primary_key=True,
        comment="seq modulo RECEIVER_PUSH_ATTEMPTS_KEPT: the table keeps the last attempts only.",
    ),
    sa.Column("seq", sa.BigInteger, nullable=False, comment="Attempt number, per endpoint."),
    sa.Column("position", sa.BigInteger, nullable=False, comment="Event position sent."),
    sa.Column("attempted_at", _TS, nullable=False, comment="When the request was sent."),
    sa.Column("duration_ms", sa.Float, nullable=False, comment="Time to the answer or the error."),
    sa.Column("status", sa.Integer, comment="HTTP status answered; NULL when there was none."),
    sa.Column("error", sa.Text, comment="Network error or the start of an error answer."),
    sa.Column(
        "outcome", sa.Text, nullable=False,
        comment="'delivered', 'retry' (will be tried again) or 'dead' (dead-lettered).",
    ),
    comment="The last attempts of each push endpoint (a ring of RECEIVER_PUSH_ATTEMPTS_KEPT rows).",
)

replication_barrier = sa.Table(
    "replication_barrier",
    metadata,
    sa.Column(
        "slot", sa.SmallInteger, primary_key=True, autoincrement=False,
        comment="pg_backend_pid() % 64 of the session that wrote the barrier.",
    ),
    sa.Column(
        "confirmed_at", sa.DateTime(timezone=True), nullable=False,
        comment="When a barrier was last committed in this slot.",
    ),
    sa.CheckConstraint("slot >= 0 AND slot < 64", name="slot"),
    comment="Barriers, no data: a receiver rewrites one of these 64 rows and waits for the "
    "synchronous standby to confirm it before it streams what it read "
    "(receiver.storage.replication).",
)

# Partitioned by day on received_at (receiver.storage.retention creates and drops the partitions
# events_pYYYYMMDD; events_default catches anything outside them). A primary key on a
# partitioned table must contain the partition column, hence (product_id, position,
# received_at); positions are unique per product by construction (products row lock).
events = sa.Table(
    "events",
    metadata,
    sa.Column("product_id", sa.Text, primary_key=True, comment=EVENT_COLUMNS["product_id"]),
    sa.Column("position", sa.BigInteger, primary_key=True, comment=EVENT_COLUMNS["position"]),
    sa.Column(
        "received_at", sa.DateTime(timezone=True), primary_key=True, nullable=False,
        comment=EVENT_COLUMNS["received_at"],
    ),
    sa.Column(
        "occurred_at", sa.DateTime(timezone=True), nullable=False,
        comment=EVENT_COLUMNS["occurred_at"],
    ),
    sa.Column("source", sa.Text, nullable=False, comment=EVENT_COLUMNS["source"]),
    sa.Column("event", sa.Text, nullable=False, comment=EVENT_COLUMNS["event"]),
    sa.Column("action_type", sa.Text, nullable=False, comment=EVENT_COLUMNS["action_type"]),
    sa.Column("event_uuid", pg.UUID(as_uuid=False), comment=EVENT_COLUMNS["event_uuid"]),
    sa.Column("dedup_key", sa.Text, nullable=False, comment=EVENT_COLUMNS["dedup_key"]),
    *(
        sa.Column(name, sa.Text, comment=EVENT_COLUMNS[name])
        for name in (
            "session_id", "distinct_id", "email", "current_url", "canonical_url", "pathname",
            "referrer", "element_tag", "element_id", "element_text", "input_name", "link_target",
        )
    ),
    sa.Column("title", sa.Text, nullable=False, comment=EVENT_COLUMNS["title"]),
    sa.Column("description", sa.Text, nullable=False, comment=EVENT_COLUMNS["description"]),
    sa.Column("session_index", sa.Integer, nullable=False, comment=EVENT_COLUMNS["session_index"]),
    sa.Column("payload", pg.JSONB, comment=EVENT_COLUMNS["payload"]),
    sa.Column("conversation_id", sa.Text, comment=EVENT_COLUMNS["conversation_id"]),
    sa.Index("ix_events_product_id_received_at", "product_id", "received_at"),
    # One user's recent activity (receiver.delivery.pull); internal events are never read there.
    # One key per user, deduplicated by Postgres: see migration 0005.
    sa.Index(
        "ix_events_live_activity", "product_id", "distinct_id",
        postgresql_where=sa.text("action_type <> 'internal'"),
    ),
    comment="One row per accepted PostHog event, normalized for SQL. Append-only.",
    postgresql_partition_by="RANGE (received_at)",
)

# Column order for COPY into events; must match StoredEvent.record().
EVENT_INSERT_COLUMNS: tuple[str, ...] = (
    "product_id", "position", "received_at", "occurred_at", "source", "event", "action_type",
    "event_uuid", "dedup_key", "session_id", "distinct_id", "email", "current_url",
    "canonical_url", "pathname", "referrer", "element_tag", "element_id", "element_text",
    "input_name", "link_target", "title", "description", "session_index", "payload",
    "conversation_id",
)

STREAM_SELECT = """
SELECT product_id, position, extract(epoch FROM received_at)::float8 AS received_at,
       extract(epoch FROM occurred_at)::float8 AS occurred_at, action_type, session_id,
       distinct_id, email, title, description, current_url, canonical_url, session_index,
       conversation_id
FROM events
"""


# SQLSTATE classes that mean "the database is not there for us right now", not "bad data":
# connection exceptions, insufficient resources, operator intervention (shutdown, restart),
# database not accepting connections, database missing.
_UNAVAILABLE_SQLSTATES = ("08", "53", "57", "55000", "3D000", "25006")


@contextmanager
def unavailable(what: str) -> Iterator[None]:
    """Map driver and network failures to a retryable 503; let everything else through."""
    try:
        yield
    except (
        TimeoutError, OSError, asyncpg.InterfaceError,
        # Every host of a multi-host URI refused or is a standby (a failover in progress).
        asyncpg.exceptions.TargetServerAttributeNotMatched,
    ) as exc:
        raise UnavailableError(f"database unavailable while {what}", retry_after=1) from exc
    except asyncpg.PostgresError as exc:
        if str(getattr(exc, "sqlstate", "") or "").startswith(_UNAVAILABLE_SQLSTATES):
            raise UnavailableError(f"database unavailable while {what}", retry_after=1) from exc
        raise


def asyncpg_dsn(sqlalchemy_url: str) -> str:
    return dsn.for_asyncpg(sqlalchemy_url)


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Binary format, so COPY can carry JSONB too: a version byte (1), then the JSON text.
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: b"\x01" + orjson.dumps(v),
        decoder=lambda b: orjson.loads(b[1:]),
        schema="pg_catalog",
        format="binary",
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """A pool ``reset`` that sends nothing (asyncpg still resets its own client-side state)."""


class BoundedPool:
    """asyncpg's pool with a bounded wait for a connection.

    asyncpg waits forever by default: under overload a request would hang until the sender's
    own timeout (PostHog's is 10 s) and count as a network error. A bounded wait raises
    ``TimeoutError``, which :func:`unavailable` turns into a prompt 503 with Retry-After.
    """

    def __init__(self, pool: asyncpg.Pool, acquire_timeout: float) -> None:
        self._pool = pool
        self.acquire_timeout = acquire_timeout

    def acquire(self, *, timeout: float | None = None) -> Any:
        return self._pool.acquire(timeout=self.acquire_timeout if timeout is None else timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


async def create_pool(
    url: str,
    *,
    max_size: int,
    timeout: float,  # noqa: ASYNC109 - asyncpg's connect timeout
    server_settings: dict[str, str] | None = None,
    reset_on_release: bool = True,
    read_only: bool = False,
) -> Any:
    """``reset_on_release=False`` skips asyncpg's reset query (advisory unlocks, ``CLOSE ALL``,
    ``UNLISTEN *``, ``RESET ALL``: one more round trip on every release) for a pool whose sessions
    never take locks, listen, open cursors or change settings (the read-only read pool).

    ``read_only``: every transaction of its sessions is read-only. Set once connected, not as a
    startup parameter: ``target_session_attrs=read-write`` (a multi-host URI) judges a session by
    ``transaction_read_only`` and would pass over the primary itself, or settle on a standby."""
    init = _init_connection
    if read_only:
        if reset_on_release:
            raise ValueError("a read-only pool must not reset its sessions (RESET ALL undoes it)")

        async def init(conn: asyncpg.Connection) -> None:
            await _init_connection(conn)
            await conn.execute("SET default_transaction_read_only = on")

    pool = await asyncpg.create_pool(
        asyncpg_dsn(url), min_size=0, max_size=max_size, timeout=timeout,
        command_timeout=max(timeout * 6, 30), init=init,
        max_inactive_connection_lifetime=60, server_settings=server_settings,
        reset=None if reset_on_release else _keep_session,
    )
    return BoundedPool(pool, acquire_timeout=timeout)


# --------------------------------------------------------------------------- append


@dataclass(frozen=True, slots=True)
class Pending:
    """An event waiting for the writer: the normalized event plus where and when it arrived."""

    product_id: str
    received_at: datetime
    event: NormalizedEvent
    # The privacy policy already applied to ``event`` by the route (a
    # receiver.ingest.privacy.Policy), so the writer's own pass can skip it; None: not yet.
    policy: Any = None


@dataclass(frozen=True, slots=True)
class Appended:
    position: int | None  # None for a duplicate
    session_index: int | None
    row: StreamRow | None


# Columns of ``events`` filled from the batch; ``position`` and ``session_index`` are assigned
# inside the statement. Types come from the table definition, so a column added to
# EVENT_INSERT_COLUMNS/_record needs no change here.
_ASSIGNED = ("position", "session_index", "conversation_id")
_INPUT_COLUMNS = tuple(c for c in EVENT_INSERT_COLUMNS if c not in _ASSIGNED)
_INPUT_INDEXES = tuple(EVENT_INSERT_COLUMNS.index(c) for c in _INPUT_COLUMNS)
_PG_TYPE = {c.name: c.type.compile(dialect=pg.dialect()) for c in events.columns}

# Up to this many events a commit is one statement (1 round trip); larger batches take the
# statement-per-step path with COPY (8+ round trips, but far cheaper per row). A/B on the
# bench machine (docs/bench/append-ab.txt): one statement wins up to 16-32 events, where
# round trips dominate; COPY wins from 64, where rows dominate.
SINGLE_STATEMENT_MAX = 32


def _append_sql() -> str:
    """Dedup keys → positions → session indexes (→ rows) → NOTIFY, as one statement.

    Why: the profile showed the writer's transaction spending most of its time in round
    trips (BEGIN, event_keys, one UPDATE per product, session_counters, COPY's two exchanges,
    NOTIFY, COMMIT: eight or more), each waiting for the busy event loop and for the server
    process to be scheduled. The locks and guarantees are those of the statements it replaces:

    * keys are inserted in the sorted order the caller passes them (stable lock order);
    * product rows are locked in product_id order (``locked``) before their bump, and held
      until commit, so one product's commits happen in position order;
    * session counters are upserted only from rows joined to ``bump``, so a counter of product
      P is touched only once P's row is locked (and it stays locked to commit): transactions
      on the same session serialize on P and cannot deadlock over counters, whatever plan
      Postgres picks (data-modifying CTEs otherwise run in whatever order the main query
      happens to pull them; with hash joins the old form locked counters first);
    * a deleted product has no ``bump`` row, so its rows reach ``events`` with a NULL position
      and the NOT NULL constraint aborts the whole statement (reported as NotFoundError);
    * positions follow batch order within a product, session indexes follow positions;
    * each row takes its session's linked conversation from the counter it upserts, under that
      counter's row lock: a link (``POST /sessions/link``) is in every event committed after it;
    * INSERT … SELECT (like COPY) works on a plain or a partitioned ``events`` table;
    * pg_notify is queued only when something was stored, and sent only at commit.
    """
    params = ", ".join(f"${i + 2}::{_PG_TYPE[c]}[]" for i, c in enumerate(_INPUT_COLUMNS))
    cols = ", ".join(EVENT_INSERT_COLUMNS)
    select = ", ".join(f"n.{c}" for c in EVENT_INSERT_COLUMNS)
    # Every name interpolated here is a column name from this module, never input.
    return f"""
WITH input AS (
    SELECT * FROM unnest($1::int[], {params}) AS t(ord, {", ".join(_INPUT_COLUMNS)})
), fresh AS (
    INSERT INTO event_keys (product_id, dedup_key, received_at)
    SELECT product_id, dedup_key, received_at FROM input
    ON CONFLICT DO NOTHING
    RETURNING product_id, dedup_key
), new_rows AS (
    SELECT i.* FROM input i JOIN fresh f USING (product_id, dedup_key)
), counts AS (
    SELECT product_id, count(*) AS n FROM new_rows GROUP BY product_id
), locked AS (
    SELECT p.product_id FROM products p
    WHERE p.product_id IN (SELECT product_id FROM counts)
    ORDER BY p.product_id FOR UPDATE
), bump AS (
    UPDATE products p SET last_position = p.last_position + c.n
    FROM counts c, locked l
    WHERE p.product_id = c.product_id AND l.product_id = c.product_id
    RETURNING p.product_id, p.last_position, c.n
), session_counts AS (
    SELECT product_id, coalesce(session_id, '') AS sid, count(*)::int AS n
    FROM new_rows GROUP BY 1, 2
), sessions AS (
    INSERT INTO session_counters (product_id, session_id, next_index)
    SELECT sc.product_id, sc.sid, sc.n FROM session_counts sc JOIN bump USING (product_id)
    ORDER BY sc.product_id, sc.sid
    ON CONFLICT (product_id, session_id)
    DO UPDATE SET next_index = session_counters.next_index + EXCLUDED.next_index,
                  last_seen_at = now()
    RETURNING product_id, session_id, next_index, conversation_id
), n AS (
    SELECT r.*,
        b.last_position - b.n
            + row_number() OVER (PARTITION BY r.product_id ORDER BY r.ord) AS position,
        (s.next_index - sc.n
            + row_number() OVER (PARTITION BY r.product_id, s.session_id ORDER BY r.ord)
            - 1)::int AS session_index,
        s.conversation_id
    FROM new_rows r
    LEFT JOIN bump b ON b.product_id = r.product_id
    LEFT JOIN sessions s
        ON s.product_id = r.product_id AND s.session_id = coalesce(r.session_id, '')
    LEFT JOIN session_counts sc ON sc.product_id = s.product_id AND sc.sid = s.session_id
), stored AS (
    INSERT INTO events ({cols}) SELECT {select} FROM n
)
SELECT ord, position, session_index, conversation_id,
    (SELECT pg_notify('{NOTIFY_EVENTS}', (json_object_agg(product_id, last_position)::jsonb
                || jsonb_build_object('{ORIGIN_KEY}', ${len(_INPUT_COLUMNS) + 2}::text))::text)
     FROM bump HAVING count(*) > 0) AS notified
FROM n
"""  # noqa: S608


# The NOTIFY payload is {product_id: head, ...} plus, under this key (never a product id: those
# start with a letter or digit), the origin of the commit: listeners skip their own writer's
# commits, whose rows it hands to the hub directly (see receiver.delivery.hub._on_events).
ORIGIN_KEY = ""
_PROCESS_TOKEN = os.urandom(4).hex()


def origin_of(pool: object) -> str:
    """Names one receiver (its connection pool) among every process on the database."""
    # The pid tells forked workers apart (they share the random token and may share ids).
    return f"{os.getpid()}-{_PROCESS_TOKEN}-{id(pool):x}"


APPEND_SQL = _append_sql()

BUMP_SQL = """
WITH c AS (SELECT * FROM unnest($1::text[], $2::bigint[]) AS c(product_id, n)),
locked AS (
    SELECT p.product_id FROM products p JOIN c USING (product_id)
    ORDER BY p.product_id FOR UPDATE OF p
)
UPDATE products p SET last_position = p.last_position + c.n
FROM c, locked l
WHERE p.product_id = c.product_id AND l.product_id = c.product_id
RETURNING p.product_id, p.last_position
"""


async def server_secret(conn: asyncpg.Connection, name: str) -> bytes:
    """The shared random key ``name``: generated by the first caller, read by every later one."""
    await conn.execute(
        "INSERT INTO server_secrets (name, secret) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        name, secrets.token_bytes(32),
    )
    return bytes(await conn.fetchval("SELECT secret FROM server_secrets WHERE name = $1", name))


async def append(
    conn: asyncpg.Connection, batch: Sequence[Pending], *, origin: str = ""
) -> list[Appended]:
    """Commit a batch in one transaction; one result per input, in input order.

    Lock order is fixed (dedup keys sorted, then product rows sorted, then session counters
    sorted), so concurrent writers in other processes cannot deadlock. The product row lock
    taken by the position bump is held until commit: commits of one product therefore happen
    in position order, and a reader that has seen position N has seen everything below it.
    Small batches are one statement (:func:`_append_sql`), large ones :func:`_append_copy`.
    """
    if len(batch) > SINGLE_STATEMENT_MAX:
        return await _append_copy(conn, batch, origin)
    first_of: dict[tuple[str, str], int] = {}
    for i, p in enumerate(batch):
        first_of.setdefault((p.product_id, p.event.dedup_key), i)
    unique = [i for _k, i in sorted(first_of.items())]
    records = [_record(batch[i], 0, 0) for i in unique]
    columns = [[r[j] for r in records] for j in _INPUT_INDEXES]
    try:
        rows = await conn.fetch(APPEND_SQL, unique, *columns, origin)  # its own transaction
    except asyncpg.NotNullViolationError as exc:
        # Only a missing products row leaves a position NULL; the statement stored nothing.
        if getattr(exc, "column_name", None) == "position":
            raise NotFoundError("product was deleted") from exc
        raise
    results = [Appended(None, None, None)] * len(batch)
    for ord_, position, index, conversation_id, _notified in rows:
        p = batch[ord_]
        results[ord_] = Appended(
            position, index, _stream_row(p, position, index, conversation_id)
        )
    return results


async def _append_copy(
    conn: asyncpg.Connection, batch: Sequence[Pending], origin: str = ""
) -> list[Appended]:
    """The path for large batches: a statement per step, rows by COPY (cheapest per row).

    Same contract as :func:`append`; this is the original implementation, unchanged.
    """
    results: list[Appended | None] = [None] * len(batch)
    first_of: dict[tuple[str, str], int] = {}
    for i, p in enumerate(batch):
        first_of.setdefault((p.product_id, p.event.dedup_key), i)
    unique = sorted(first_of.items())

    async with conn.transaction():
        fresh = await conn.fetch(
            """
            INSERT INTO event_keys (product_id, dedup_key, received_at)
            SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])
            ON CONFLICT DO NOTHING
            RETURNING product_id, dedup_key
            """,
            [k[0] for k, _ in unique],
            [k[1] for k, _ in unique],
            [batch[i].received_at for _, i in unique],
        )
        fresh_keys = {(r[0], r[1]) for r in fresh}
        new_idx = [i for k, i in unique if k in fresh_keys]
        new_idx.sort(key=lambda i: (batch[i].product_id, i))

        per_product: dict[str, list[int]] = {}
        for i in new_idx:
            per_product.setdefault(batch[i].product_id, []).append(i)
        positions: dict[int, int] = {}
        # One statement for every product of the batch (it was one round trip per product:
        # a batch spread over 100 products took 100 of them, which under load grew the next
        # batch and so on). Rows are still locked in product_id order.
        pids = sorted(per_product)
        lasts = dict(
            await conn.fetch(BUMP_SQL, pids, [len(per_product[pid]) for pid in pids])
        ) if pids else {}
        for product_id in pids:
            idxs = per_product[product_id]
            last = lasts.get(product_id)
            if last is None:
                    raise NotFoundError(f"product {product_id!r} was deleted")
            first = last - len(idxs) + 1
            for offset, i in enumerate(idxs):
                positions[i] = first + offset

        per_session: dict[tuple[str, str], list[int]] = {}
        for i in new_idx:
            per_session.setdefault(
                (batch[i].product_id, batch[i].event.session_id or ""), []
            ).append(i)
        indexes: dict[int, int] = {}
        conversations: dict[int, str | None] = {}
        if per_session:
            keys = sorted(per_session)
            counters = await conn.fetch(
                """
                INSERT INTO session_counters (product_id, session_id, next_index)
                SELECT * FROM unnest($1::text[], $2::text[], $3::int[])
                ON CONFLICT (product_id, session_id)
                DO UPDATE SET next_index = session_counters.next_index + EXCLUDED.next_index,
                              last_seen_at = now()
                RETURNING product_id, session_id, next_index, conversation_id
                """,
                [k[0] for k in keys],
                [k[1] for k in keys],
                [len(per_session[k]) for k in keys],
            )
            for r in counters:
                idxs = per_session[(r[0], r[1])]
                start = r[2] - len(idxs)
                for offset, i in enumerate(sorted(idxs, key=lambda j: positions[j])):
                    indexes[i] = start + offset
                    conversations[i] = r[3]

        if new_idx:
            await conn.copy_records_to_table(
                "events",
                records=[
                    _record(batch[i], positions[i], indexes[i], conversations[i]) for i in new_idx
                ],
                columns=EVENT_INSERT_COLUMNS,
            )
            heads = {pid: positions[idxs[-1]] for pid, idxs in per_product.items()}
            await conn.execute(
                "SELECT pg_notify($1, $2)", NOTIFY_EVENTS,
                orjson.dumps({**heads, ORIGIN_KEY: origin}).decode(),
            )

    for i in new_idx:
        p = batch[i]
        results[i] = Appended(
            positions[i], indexes[i], _stream_row(p, positions[i], indexes[i], conversations[i])
        )
    for i in range(len(batch)):
        if results[i] is None:
            results[i] = Appended(None, None, None)
    return [r for r in results if r is not None]


def _record(
    p: Pending, position: int, session_index: int, conversation_id: str | None = None
) -> tuple[Any, ...]:
    e = p.event
    return (
        p.product_id, position, p.received_at, e.occurred_at, e.source, e.event, e.action_type,
        e.event_uuid, e.dedup_key, e.session_id, e.distinct_id, e.email, e.current_url,
        e.canonical_url, e.pathname, e.referrer, e.element_tag, e.element_id, e.element_text,
        e.input_name, e.link_target, e.title, e.description, session_index, e.payload,
        conversation_id,
    )


def _stream_row(
    p: Pending, position: int, session_index: int, conversation_id: str | None
) -> StreamRow:
    e = p.event
    return StreamRow(
        product_id=p.product_id,
        position=position,
        received_at=p.received_at.timestamp(),
        occurred_at=e.occurred_at.timestamp(),
        action_type=e.action_type,
        session_id=e.session_id,
        distinct_id=e.distinct_id,
        email=e.email,
        title=e.title,
        description=e.description,
        current_url=e.current_url,
        canonical_url=e.canonical_url,
        session_index=session_index,
        conversation_id=conversation_id,
    )


# --------------------------------------------------------------------------- stream reads


def _row(r: asyncpg.Record) -> StreamRow:
    return StreamRow(*r)


async def read_after(
    conn: asyncpg.Connection, product_id: str, after: int, limit: int, upto: int | None = None
) -> list[StreamRow]:
    """A page after ``after``; never past ``upto`` (a confirmed head, see
    receiver.storage.replication) when given."""
    if upto is not None:
        rows = await conn.fetch(
            STREAM_SELECT + " WHERE product_id = $1 AND position > $2 AND position <= $4"
            " ORDER BY position LIMIT $3",
            product_id, after, limit, upto,
        )
    else:
        rows = await conn.fetch(
            STREAM_SELECT + " WHERE product_id = $1 AND position > $2 ORDER BY position LIMIT $3",
            product_id, after, limit,
        )
    return [_row(r) for r in rows]


async def read_range(
    conn: asyncpg.Connection, product_id: str, after: int, upto: int
) -> list[StreamRow]:
    rows = await conn.fetch(
        STREAM_SELECT
        + " WHERE product_id = $1 AND position > $2 AND position <= $3 ORDER BY position",
        product_id,
        after,
        upto,
    )
    return [_row(r) for r in rows]


async def link_session(
    conn: asyncpg.Connection, product_id: str, session_id: str, conversation_id: str
) -> None:
    """Link a session to a chat conversation: every event of the session stored from now on
    carries ``conversation_id`` (the append copies it from this counter row; see
    :func:`_append_sql`). A session not seen yet gets its counter now, at index 0.

    One row lock and nothing else, so it cannot deadlock with the append's lock order.
    """
    await conn.execute(
        """
        INSERT INTO session_counters (product_id, session_id, next_index, conversation_id)
        VALUES ($1, $2, 0, $3)
        ON CONFLICT (product_id, session_id)
        DO UPDATE SET conversation_id = EXCLUDED.conversation_id, last_seen_at = now()
        """,
        product_id, session_id, conversation_id,
    )


def with_seen(select: str, order: str = "ASC") -> str:
    """A query of stream rows (:data:`STREAM_SELECT` ...) that also returns where it was made
    (server, WAL position: receiver.storage.replication), ordered by position, so the caller can
    have the synchronous standby confirm it before anything is served. The MATERIALIZED CTE
    evaluates the position once, after the statement's snapshot was taken: it is at or past the
    commit of every row the statement returns. Read the answer with :func:`rows_seen`."""
    return f"""
WITH seen AS MATERIALIZED (SELECT {SEEN_COLUMNS})
SELECT e.*, seen.unsynced, seen.lsn, seen.server FROM ({select}) e, seen
ORDER BY e.position {order}
"""  # noqa: S608 - constant text


def rows_seen(records: list[asyncpg.Record]) -> tuple[list[StreamRow], Seen | None]:
    """The stream rows of a :func:`with_seen` query, and where they were read (the same on every
    row; None when there were no rows)."""
    if not records:
        return [], None
    return [StreamRow(*tuple(r)[:_STREAM_FIELDS]) for r in records], Seen.of(records[0])


_READ_RANGE_SEEN = with_seen(
    STREAM_SELECT + "WHERE product_id = $1 AND position > $2 AND position <= $3"
)
_HEAD_SEEN = f"""
WITH seen AS MATERIALIZED (SELECT {SEEN_COLUMNS})
SELECT p.last_position, seen.unsynced, seen.lsn, seen.server
FROM products p, seen WHERE p.product_id = $1
"""  # noqa: S608 - constant text
_STREAM_FIELDS = len(dataclasses.fields(StreamRow))


async def read_range_seen(
    conn: asyncpg.Connection, product_id: str, after: int, upto: int
) -> tuple[list[StreamRow], Seen | None]:
    return rows_seen(await conn.fetch(_READ_RANGE_SEEN, product_id, after, upto))


async def head(conn: asyncpg.Connection, product_id: str) -> int | None:
    value = await conn.fetchval(
        "SELECT last_position FROM products WHERE product_id = $1", product_id
    )
    return int(value) if value is not None else None


async def head_seen(conn: asyncpg.Connection, product_id: str) -> tuple[int | None, Seen | None]:
    row = await conn.fetchrow(_HEAD_SEEN, product_id)
    if row is None:
        return None, None
    return int(row["last_position"]), Seen.of(row)


async def position_before(conn: asyncpg.Connection, product_id: str, since: datetime) -> int:
    """The cursor that replays every event received at or after ``since``."""
    value = await conn.fetchval(
        "SELECT min(position) - 1 FROM events WHERE product_id = $1 AND received_at >= $2",
        product_id,
        since,
    )
    if value is None:
        current = await head(conn, product_id)
        return current or 0
    return int(value)
