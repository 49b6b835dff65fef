"""Products, hashed credentials, dedup keys, session counters and the event log.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of the column contract at this revision (later revisions alter it explicitly).
EVENT_COLUMNS = {
    "product_id": "Product the event belongs to (the {product_id} of the webhook or stream URL).",
    "position": "Per-product stream position: 1, 2, 3, ... with no gaps, in commit order. "
    "The SSE id; resume with ?since=<position>.",
    "received_at": "When the receiver accepted the event (UTC). Also the frame's forwarded_at.",
    "occurred_at": "When the event happened on the client (PostHog timestamp, UTC; "
    "clamped to received_at when missing or more than 23 h in the future).",
    "source": "How the event arrived: 'webhook' (PostHog destination) or 'capture' "
    "(posthog-js straight to the receiver).",
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
}

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the schema."""
    op.create_table(
        "products",
        sa.Column("product_id", sa.Text, primary_key=True, comment="Product identifier."),
        sa.Column("contact_email", sa.Text, nullable=False, comment="Who to contact about it."),
        sa.Column("integration_type", sa.Text, nullable=False, server_default="event_stream"),
        sa.Column("integration_config", pg.JSONB, nullable=False, server_default=sa.text("'{}'")),
        sa.Column(
            "capture_token", sa.Text, nullable=False,
            comment="Public token posthog-js sends to the capture endpoints.",
        ),
        sa.Column(
            "last_position", sa.BigInteger, nullable=False, server_default="0",
            comment="Position of the newest committed event; its row lock orders commits.",
        ),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("product_id", name="pk_products"),
        sa.UniqueConstraint("capture_token", name="uq_products_capture_token"),
        comment="Registered products.",
    )
    op.create_table(
        "credentials",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), nullable=False),
        sa.Column("product_id", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False, comment="webhook_secret or stream_key."),
        sa.Column("key_id", sa.Text, nullable=False, comment="Public id of the credential."),
        sa.Column("secret_sha256", sa.LargeBinary, nullable=False, comment="SHA-256 of the secret."),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column(
            "expires_at", TZ, nullable=True,
            comment="Set when rotated: the old credential keeps working until then.",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_credentials"),
        sa.ForeignKeyConstraint(
            ["product_id"], ["products.product_id"], ondelete="CASCADE",
            name="fk_credentials_product_id_products",
        ),
        sa.UniqueConstraint("key_id", name="uq_credentials_key_id"),
        sa.CheckConstraint("kind IN ('webhook_secret', 'stream_key')", name="ck_credentials_kind"),
        comment="Hashed webhook secrets and stream keys. Plain values are never stored.",
    )
    op.create_index("ix_credentials_product_id", "credentials", ["product_id"])
    op.create_table(
        "event_keys",
        sa.Column("product_id", sa.Text, nullable=False),
        sa.Column("dedup_key", sa.Text, nullable=False),
        sa.Column("received_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("product_id", "dedup_key", name="pk_event_keys"),
        comment="Deduplication keys of accepted events (PostHog delivers at least once).",
    )
    op.create_table(
        "session_counters",
        sa.Column("product_id", sa.Text, nullable=False),
        sa.Column("session_id", sa.Text, nullable=False),
        sa.Column("next_index", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("product_id", "session_id", name="pk_session_counters"),
        comment="Next per-session action index.",
    )
    text_cols = (
        "session_id", "distinct_id", "email", "current_url", "canonical_url", "pathname",
        "referrer", "element_tag", "element_id", "element_text", "input_name", "link_target",
    )
    c = EVENT_COLUMNS
    op.create_table(
        "events",
        sa.Column("product_id", sa.Text, nullable=False, comment=c["product_id"]),
        sa.Column("position", sa.BigInteger, nullable=False, comment=c["position"]),
        sa.Column("received_at", TZ, nullable=False, comment=c["received_at"]),
        sa.Column("occurred_at", TZ, nullable=False, comment=c["occurred_at"]),
        sa.Column("source", sa.Text, nullable=False, comment=c["source"]),
        sa.Column("event", sa.Text, nullable=False, comment=c["event"]),
        sa.Column("action_type", sa.Text, nullable=False, comment=c["action_type"]),
        sa.Column("event_uuid", pg.UUID(as_uuid=False), comment=c["event_uuid"]),
        sa.Column("dedup_key", sa.Text, nullable=False, comment=c["dedup_key"]),
        *(sa.Column(name, sa.Text, comment=c[name]) for name in text_cols),
        sa.Column("title", sa.Text, nullable=False, comment=c["title"]),
        sa.Column("description", sa.Text, nullable=False, comment=c["description"]),
        sa.Column("session_index", sa.Integer, nullable=False, comment=c["session_index"]),
        sa.Column("payload", pg.JSONB, comment=c["payload"]),
        sa.PrimaryKeyConstraint("product_id", "position", name="pk_events"),
        comment="One row per accepted PostHog event, normalized for SQL. Append-only.",
    )
    op.create_index("ix_events_product_id_received_at", "events", ["product_id", "received_at"])


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("session_counters")
    op.drop_table("event_keys")
    op.drop_table("credentials")
    op.drop_table("products")
