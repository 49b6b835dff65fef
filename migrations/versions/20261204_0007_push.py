"""Push mode and session links.

* ``push_endpoints``: one per product in push mode, with a durable cursor over the product's
  event positions (the event log is the outbox: no copy of the events is made);
* ``push_dead_letters``: payloads delivery gave up on, until ``receiver push retry|skip``;
* ``push_attempts``: the last attempts of each endpoint, a fixed ring of slots;
* ``session_counters.conversation_id`` and ``events.conversation_id``: ``POST /sessions/link``
  links a session to a chat conversation, and every event of the session stored afterwards
  carries it (on the stream, on push, in SQL);
* ``products.session_link``: who may call ``POST /sessions/link`` for the product.

A product registered in push mode before this revision (the receiver stored the configuration
and delivered nothing) gets no endpoint here: its secret was kept in integration_config, but
delivering a backlog nobody expects any more would surprise more than it helps. Re-registering
it (force_reregister) starts delivery from then on.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
COUNTERS_COMMENT = "Next per-session action index, and the session's linked conversation."


def upgrade() -> None:
    op.add_column(
        "products",
        sa.Column(
            "session_link", sa.Text, nullable=False, server_default="token",
            comment="Who may call POST /sessions/link for this product: 'token' (the request "
            "carries the product's capture token), 'open' (anyone, like the hosted connector) "
            "or 'off'.",
        ),
    )
    op.create_check_constraint(
        "ck_products_session_link", "products", "session_link IN ('token', 'open', 'off')"
    )
    op.add_column(
        "session_counters",
        sa.Column(
            "conversation_id", sa.Text, nullable=True,
            comment="Chat conversation linked to the session (POST /sessions/link); copied into "
            "every event of the session stored from then on.",
        ),
    )
    op.create_table_comment("session_counters", COUNTERS_COMMENT)
    # Nullable with no default: a catalog change only, even on a large partitioned table.
    op.add_column(
        "events",
        sa.Column(
            "conversation_id", sa.Text,
            comment="Chat conversation the session was linked to (POST /sessions/link) when the "
            "event was stored; NULL for events stored before the link.",
        ),
    )

    op.create_table(
        "push_endpoints",
        sa.Column(
            "id", sa.Integer, sa.Identity(always=True), nullable=False,
            comment="Endpoint id; also the second key of its deliverer's advisory lock.",
        ),
        sa.Column(
            "product_id", sa.Text, nullable=False,
            comment="Product whose events are pushed (one endpoint per product).",
        ),
        sa.Column(
            "url", sa.Text, nullable=False,
            comment="Destination URL. It may carry credentials: never logged, shown redacted.",
        ),
        sa.Column(
            "secret", sa.Text, nullable=False,
            comment="Signing secret, stored as given: every request is signed with it, so it "
            "cannot be hashed. Never returned after registration, never logged.",
        ),
        sa.Column(
            "previous_secret", sa.Text,
            comment="The secret before the last rotation: requests carry signatures made with "
            "both until previous_secret_expires_at.",
        ),
        sa.Column("previous_secret_expires_at", TS, comment="End of the rotation's grace period."),
        sa.Column(
            "cursor", sa.BigInteger, nullable=False,
            comment="Position of the last event delivered, dead-lettered or skipped; delivery "
            "resumes after it.",
        ),
        sa.Column(
            "max_attempts", sa.Integer,
            comment="Attempts per payload before it is dead-lettered; "
            "NULL = RECEIVER_PUSH_MAX_ATTEMPTS.",
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
        sa.Column("first_attempt_at", TS, comment="First attempt of the payload being retried."),
        sa.Column("next_attempt_at", TS, comment="When the payload being retried is tried again."),
        sa.Column(
            "last_status", sa.Integer,
            comment="HTTP status of the last attempt; NULL when there was no answer "
            "(see last_error).",
        ),
        sa.Column("last_error", sa.Text, comment="Why the last failed attempt failed."),
        sa.Column("last_attempt_at", TS, comment="Time of the last attempt."),
        sa.Column("last_success_at", TS, comment="Time of the last 2xx answer."),
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
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="pk_push_endpoints"),
        sa.UniqueConstraint("product_id", name="uq_push_endpoints_product_id"),
        sa.ForeignKeyConstraint(
            ["product_id"], ["products.product_id"], ondelete="CASCADE",
            name="fk_push_endpoints_product_id_products",
        ),
        sa.CheckConstraint("cursor >= 0", name="ck_push_endpoints_cursor"),
        sa.CheckConstraint(
            "max_attempts IS NULL OR max_attempts >= 1", name="ck_push_endpoints_max_attempts"
        ),
        sa.CheckConstraint(
            "max_age_seconds IS NULL OR max_age_seconds >= 1",
            name="ck_push_endpoints_max_age_seconds",
        ),
        sa.CheckConstraint(
            "max_in_flight IS NULL OR max_in_flight >= 1", name="ck_push_endpoints_max_in_flight"
        ),
        comment="Push destinations (push mode): where each product's payloads are POSTed, and a "
        "durable cursor over its event positions.",
    )

    op.create_table(
        "push_dead_letters",
        sa.Column(
            "endpoint_id", sa.Integer, nullable=False,
            comment="The push endpoint (push_endpoints.id).",
        ),
        sa.Column(
            "position", sa.BigInteger, nullable=False,
            comment="Position of the event whose payload was not delivered (events.position).",
        ),
        sa.Column(
            "reason", sa.Text, nullable=False,
            comment="'rejected' (an answer that is not retried, e.g. 400), 'attempts' (too many "
            "failed attempts) or 'age' (failing for too long).",
        ),
        sa.Column(
            "attempts", sa.Integer, nullable=False, comment="Attempts made, retries included."
        ),
        sa.Column("last_status", sa.Integer, comment="HTTP status of the last attempt, if any."),
        sa.Column("last_error", sa.Text, comment="Why the last attempt failed."),
        sa.Column("first_attempt_at", TS, nullable=False, comment="Time of the first attempt."),
        sa.Column("last_attempt_at", TS, nullable=False, comment="Time of the last attempt."),
        sa.Column(
            "dead_at", TS, nullable=False, server_default=sa.func.now(),
            comment="When the payload was (last) given up on.",
        ),
        sa.Column(
            "retry_requested_at", TS,
            comment="Set by `receiver push retry`: the deliverer sends it again (row deleted once "
            "delivered). NULL = parked.",
        ),
        sa.PrimaryKeyConstraint("endpoint_id", "position", name="pk_push_dead_letters"),
        sa.ForeignKeyConstraint(
            ["endpoint_id"], ["push_endpoints.id"], ondelete="CASCADE",
            name="fk_push_dead_letters_endpoint_id_push_endpoints",
        ),
        sa.CheckConstraint(
            "reason IN ('rejected', 'attempts', 'age')", name="ck_push_dead_letters_reason"
        ),
        comment="Payloads that push delivery gave up on; `receiver push retry` sends them again.",
    )

    op.create_table(
        "push_attempts",
        sa.Column(
            "endpoint_id", sa.Integer, nullable=False,
            comment="The push endpoint (push_endpoints.id).",
        ),
        sa.Column(
            "slot", sa.Integer, nullable=False,
            comment="seq modulo RECEIVER_PUSH_ATTEMPTS_KEPT: the table keeps the last attempts "
            "only.",
        ),
        sa.Column("seq", sa.BigInteger, nullable=False, comment="Attempt number, per endpoint."),
        sa.Column("position", sa.BigInteger, nullable=False, comment="Event position sent."),
        sa.Column("attempted_at", TS, nullable=False, comment="When the request was sent."),
        sa.Column(
            "duration_ms", sa.Float, nullable=False, comment="Time to the answer or the error."
        ),
        sa.Column("status", sa.Integer, comment="HTTP status answered; NULL when there was none."),
        sa.Column("error", sa.Text, comment="Network error or the start of an error answer."),
        sa.Column(
            "outcome", sa.Text, nullable=False,
            comment="'delivered', 'retry' (will be tried again) or 'dead' (dead-lettered).",
        ),
        sa.PrimaryKeyConstraint("endpoint_id", "slot", name="pk_push_attempts"),
        sa.ForeignKeyConstraint(
            ["endpoint_id"], ["push_endpoints.id"], ondelete="CASCADE",
            name="fk_push_attempts_endpoint_id_push_endpoints",
        ),
        comment="The last attempts of each push endpoint (a ring of RECEIVER_PUSH_ATTEMPTS_KEPT "
        "rows).",
    )


def downgrade() -> None:
    for name in ("push_attempts", "push_dead_letters", "push_endpoints"):
        op.drop_table(name)
    op.drop_column("events", "conversation_id")
    op.create_table_comment("session_counters", "Next per-session action index.")
    op.drop_column("session_counters", "conversation_id")
    op.drop_constraint("ck_products_session_link", "products", type_="check")
    op.drop_column("products", "session_link")
