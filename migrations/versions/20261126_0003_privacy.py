"""Per-product PII policy: ``products.privacy_policy``.

An empty object means the default policy (keep email and query strings, redact card numbers
and email addresses in element text and URLs, never store IP addresses); see
``receiver.privacy`` for the keys. Existing products get the default, which is what the
receiver already applied to them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COMMENT = (
    "PII policy applied before anything is stored or streamed (receiver.privacy); "
    "{} = the default."
)


def upgrade() -> None:
    op.add_column(
        "products",
        sa.Column(
            "privacy_policy", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb"),
            comment=COMMENT,
        ),
    )
    op.create_check_constraint(
        "ck_products_privacy_policy", "products", "jsonb_typeof(privacy_policy) = 'object'"
    )


def downgrade() -> None:
    op.drop_constraint("ck_products_privacy_policy", "products", type_="check")
    op.drop_column("products", "privacy_policy")
