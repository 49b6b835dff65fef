"""Products and their credentials: creation, rotation, deletion, and the cached lookups that
every webhook, capture and stream request makes.

Secrets are returned once, at creation or rotation, and stored only as SHA-256 hashes.
Rotation never cuts a running integration off: the previous credential keeps working for a
grace period (``RECEIVER_SECRET_GRACE_SECONDS``, 24 h by default) before it expires.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg
import orjson

from receiver import security
from receiver.errors import BadRequestError, ConflictError, NotFoundError
from receiver.ingest import privacy
from receiver.storage.store import NOTIFY_PRODUCTS

PRODUCT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
EMAIL_RE = re.compile(r"^[^@\s]{1,200}@[^@\s]{1,200}\.[^@\s]{1,63}$")
CACHE_SECONDS = 10.0
Kind = Literal["webhook_secret", "stream_key"]
SESSION_LINK_MODES = ("token", "open", "off")


def validate_product_id(product_id: str) -> str:
    if not PRODUCT_ID_RE.fullmatch(product_id or ""):
        raise BadRequestError(
            "product_id must be 1-128 characters: letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return product_id


def validate_email(email: str) -> str:
    email = (email or "").strip()
    if not EMAIL_RE.fullmatch(email):
        raise BadRequestError("contact_email must be a valid email address")
    return email


@dataclass(frozen=True, slots=True)
class IssuedCredentials:
    """What an operator sees exactly once after create/rotate."""

    product_id: str
    webhook_secret: str | None
    stream_key: str | None
    stream_key_id: str | None
    capture_token: str

    def as_dict(self, base_url: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "product_id": self.product_id,
            "webhook_url": f"{base_url}/webhook/{self.product_id}",
            "stream_url": f"{base_url}/stream/{self.product_id}",
            "capture_url": f"{base_url}/e/",
            "capture_token": self.capture_token,
        }
        if self.webhook_secret:
            out["webhook_secret"] = self.webhook_secret
        if self.stream_key:
            out["stream_key"] = self.stream_key
            out["unkey_key"] = self.stream_key
            out["unkey_key_id"] = self.stream_key_id
        return out


async def _insert_credential(
    conn: asyncpg.Connection, product_id: str, kind: Kind, secret: str
) -> str:
    key_id = security.new_key_id()
    await conn.execute(
        "INSERT INTO credentials (product_id, kind, key_id, secret_sha256) VALUES ($1, $2, $3, $4)",
        product_id,
        kind,
        key_id,
        security.hash_secret(secret),
    )
    return key_id


async def _expire_current(
    conn: asyncpg.Connection, product_id: str, kind: Kind, grace_seconds: float
) -> None:
    await conn.execute(
        """
        UPDATE credentials SET expires_at = now() + make_interval(secs => $3)
        WHERE product_id = $1 AND kind = $2
          AND (expires_at IS NULL OR expires_at > now() + make_interval(secs => $3))
        """,
        product_id,
        kind,
        float(grace_seconds),
    )


async def _notify(conn: asyncpg.Connection, product_id: str) -> None:
    await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_PRODUCTS, product_id)


async def create(
    conn: asyncpg.Connection,
    product_id: str,
    *,
    contact_email: str,
    webhook_secret: str | None = None,
    integration_type: str = "event_stream",
    integration_config: dict[str, Any] | None = None,
    force: bool = False,
    grace_seconds: float = 0,
    privacy_policy: privacy.Policy | None = None,
) -> IssuedCredentials:
    """Register a product, or with ``force`` re-register it and rotate both credentials.

    ``privacy_policy`` None keeps the current policy on re-registration (the default policy for
    a new product): re-running onboarding never relaxes a policy set by a privacy officer.
    """
    validate_product_id(product_id)
    policy_json = orjson.dumps(privacy_policy.to_json() if privacy_policy else {}).decode()
    contact_email = validate_email(contact_email)
    # The SDK generates a secret client-side (token_urlsafe(32)) and expects it to be used;
    # anything weaker than that is replaced by one of ours (returned in the response).
    if not webhook_secret or len(webhook_secret) < 32:
        webhook_secret = security.new_webhook_secret()
    stream_key = security.new_stream_key()
    config_json = orjson.dumps(integration_config or {"mode": "sse"}).decode()
    async with conn.transaction():
        existing = await conn.fetchrow(
            "SELECT capture_token FROM products WHERE product_id = $1 FOR UPDATE", product_id
        )
        if existing is not None and not force:
            raise ConflictError(
                f"product {product_id!r} is already registered; "
                "pass force_reregister=true to rotate its credentials"
            )
        if existing is None:
            capture_token = security.new_capture_token()
            await conn.execute(
                """
                INSERT INTO products (product_id, contact_email, integration_type,
                                      integration_config, capture_token, privacy_policy)
                VALUES ($1, $2, $3, $4::text::jsonb, $5, $6::text::jsonb)
                """,
                product_id,
                contact_email,
                integration_type,
                config_json,
                capture_token,
                policy_json,
            )
        else:
            capture_token = existing["capture_token"]
            await conn.execute(
                """
                UPDATE products SET contact_email = $2, integration_type = $3,
                       integration_config = $4::text::jsonb, updated_at = now()
                WHERE product_id = $1
                """,
                product_id,
                contact_email,
                integration_type,
                config_json,
            )
            if privacy_policy is not None:
                await conn.execute(
                    "UPDATE products SET privacy_policy = $2::text::jsonb WHERE product_id = $1",
                    product_id,
                    policy_json,
                )
            await _expire_current(conn, product_id, "webhook_secret", grace_seconds)
            await _expire_current(conn, product_id, "stream_key", grace_seconds)
        await _insert_credential(conn, product_id, "webhook_secret", webhook_secret)
        key_id = await _insert_credential(conn, product_id, "stream_key", stream_key)
        await _notify(conn, product_id)
    return IssuedCredentials(product_id, webhook_secret, stream_key, key_id, capture_token)


async def rotate(
    conn: asyncpg.Connection,
    product_id: str,
    *,
    webhook_secret: bool = True,
    stream_key: bool = False,
    grace_seconds: float,
) -> IssuedCredentials:
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT capture_token FROM products WHERE product_id = $1 FOR UPDATE", product_id
        )
        if row is None:
            raise NotFoundError(f"unknown product {product_id!r}")
        new_secret = new_key = key_id = None
        if webhook_secret:
            await _expire_current(conn, product_id, "webhook_secret", grace_seconds)
            new_secret = security.new_webhook_secret()
            await _insert_credential(conn, product_id, "webhook_secret", new_secret)
        if stream_key:
            await _expire_current(conn, product_id, "stream_key", grace_seconds)
            new_key = security.new_stream_key()
            key_id = await _insert_credential(conn, product_id, "stream_key", new_key)
        await conn.execute(
            "UPDATE products SET updated_at = now() WHERE product_id = $1", product_id
        )
        await _notify(conn, product_id)
    return IssuedCredentials(product_id, new_secret, new_key, key_id, row["capture_token"])


async def get_policy(conn: asyncpg.Connection, product_id: str) -> privacy.Policy:
    row = await conn.fetchrow(
        "SELECT privacy_policy::text FROM products WHERE product_id = $1", product_id
    )
    if row is None:
        raise NotFoundError(f"unknown product {product_id!r}")
    return privacy.Policy.from_json(orjson.loads(row[0]))


async def set_policy(
    conn: asyncpg.Connection, product_id: str, policy: privacy.Policy
) -> privacy.Policy:
    """Store a product's privacy policy; every process applies it within seconds (NOTIFY).

    It applies to events received from then on; events already stored are not rewritten.
    """
    async with conn.transaction():
        status = await conn.execute(
            "UPDATE products SET privacy_policy = $2::text::jsonb, updated_at = now() "
            "WHERE product_id = $1",
            product_id,
            orjson.dumps(policy.to_json()).decode(),
        )
        if status.split()[-1] == "0":
            raise NotFoundError(f"unknown product {product_id!r}")
        await _notify(conn, product_id)
    return policy


async def set_session_link(conn: asyncpg.Connection, product_id: str, mode: str) -> str:
    """Who may call ``POST /sessions/link`` for the product: 'token', 'open' or 'off'."""
    if mode not in SESSION_LINK_MODES:
        raise BadRequestError("session_link must be one of: " + ", ".join(SESSION_LINK_MODES))
    async with conn.transaction():
        status = await conn.execute(
            "UPDATE products SET session_link = $2, updated_at = now() WHERE product_id = $1",
            product_id, mode,
        )
        if status.split()[-1] == "0":
            raise NotFoundError(f"unknown product {product_id!r}")
        await _notify(conn, product_id)
    return mode


async def products_hashing_emails(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT product_id FROM products WHERE privacy_policy->>'email' = 'hash' ORDER BY 1"
    )
    return [r[0] for r in rows]


async def delete(conn: asyncpg.Connection, product_id: str) -> int:
    """Delete a product, its credentials and all its events; returns the events removed."""
    async with conn.transaction():
        found = await conn.fetchval(
            "SELECT 1 FROM products WHERE product_id = $1 FOR UPDATE", product_id
        )
        if not found:
            raise NotFoundError(f"unknown product {product_id!r}")
        status = await conn.execute("DELETE FROM events WHERE product_id = $1", product_id)
        await conn.execute("DELETE FROM event_keys WHERE product_id = $1", product_id)
        await conn.execute("DELETE FROM session_counters WHERE product_id = $1", product_id)
        await conn.execute("DELETE FROM products WHERE product_id = $1", product_id)
        await _notify(conn, product_id)
    return int(status.split()[-1])


async def describe(conn: asyncpg.Connection, product_id: str) -> dict[str, Any]:
    row = await conn.fetchrow(
        """
        SELECT product_id, contact_email, integration_type, capture_token, last_position,
               created_at, updated_at, privacy_policy::text AS privacy_policy
        FROM products WHERE product_id = $1
        """,
        product_id,
    )
    if row is None:
        raise NotFoundError(f"unknown product {product_id!r}")
    creds = await conn.fetch(
        """
        SELECT kind, key_id, created_at, expires_at FROM credentials
        WHERE product_id = $1 AND (expires_at IS NULL OR expires_at > now())
        ORDER BY kind, created_at
        """,
        product_id,
    )
    out = dict(row)
    out["privacy_policy"] = privacy.Policy.from_json(orjson.loads(row["privacy_policy"])).to_json()
    out["credentials"] = [dict(c) for c in creds]
    return out


async def list_all(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT product_id, contact_email, last_position, created_at FROM products ORDER BY 1"
    )
    return [dict(r) for r in rows]


# --------------------------------------------------------------------------- cached lookups


@dataclass(frozen=True, slots=True)
class ProductAuth:
    product_id: str
    capture_token: str
    webhook_hashes: tuple[tuple[bytes, datetime | None], ...]
    stream_hashes: tuple[tuple[bytes, datetime | None], ...]
    policy: privacy.Policy = privacy.DEFAULT
    session_link: str = "token"  # who may call POST /sessions/link (SESSION_LINK_MODES)

    def _check(
        self, presented: str | None, hashes: tuple[tuple[bytes, datetime | None], ...]
    ) -> bool:
        now = datetime.now(UTC)
        live = [h for h, expires in hashes if expires is None or expires > now]
        # Always compare against at least one hash so an empty set costs the same time.
        return security.matches_any(presented, live or [b"\0" * 32]) and bool(live)

    def webhook_ok(self, presented: str | None) -> bool:
        return self._check(presented, self.webhook_hashes)

    def stream_ok(self, presented: str | None) -> bool:
        return self._check(presented, self.stream_hashes)


@dataclass
class _Entry:
    value: ProductAuth | None
    at: float


@dataclass
class Directory:
    """A small TTL cache in front of the products table.

    Rejections for unknown products and wrong keys must stay cheap (the stock SDK retries a
    rejected stream about once a second, forever), so negative answers are cached too.
    ``receiver_products`` notifications from any process invalidate entries early.
    """

    pool: asyncpg.Pool
    ttl: float = CACHE_SECONDS
    _entries: dict[str, _Entry] = field(default_factory=dict)
    _tokens: dict[str, tuple[str | None, float]] = field(default_factory=dict)

    def invalidate(self, product_id: str | None = None) -> None:
        if product_id is None:
            self._entries.clear()
            self._tokens.clear()
        else:
            self._entries.pop(product_id, None)
            self._tokens.clear()

    async def get(self, product_id: str) -> ProductAuth | None:
        now = time.monotonic()
        entry = self._entries.get(product_id)
        if entry is not None and now - entry.at < self.ttl:
            return entry.value
        if not PRODUCT_ID_RE.fullmatch(product_id):
            return None
        async with self.pool.acquire() as conn:
            value = await load(conn, product_id)
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[product_id] = _Entry(value, now)
        return value

    async def by_capture_token(self, token: str) -> ProductAuth | None:
        now = time.monotonic()
        hit = self._tokens.get(token)
        if hit is not None and now - hit[1] < self.ttl:
            return await self.get(hit[0]) if hit[0] else None
        async with self.pool.acquire() as conn:
            product_id = await conn.fetchval(
                "SELECT product_id FROM products WHERE capture_token = $1", token
            )
        if len(self._tokens) > 10_000:
            self._tokens.clear()
        self._tokens[token] = (product_id, now)
        return await self.get(product_id) if product_id else None


async def load(conn: asyncpg.Connection, product_id: str) -> ProductAuth | None:
    row = await conn.fetchrow(
        "SELECT capture_token, privacy_policy::text, session_link FROM products "
        "WHERE product_id = $1",
        product_id,
    )
    if row is None:
        return None
    creds = await conn.fetch(
        """
        SELECT kind, secret_sha256, expires_at FROM credentials
        WHERE product_id = $1 AND (expires_at IS NULL OR expires_at > now())
        """,
        product_id,
    )
    return ProductAuth(
        product_id=product_id,
        capture_token=row["capture_token"],
        webhook_hashes=tuple(
            (bytes(c["secret_sha256"]), c["expires_at"]) for c in creds
            if c["kind"] == "webhook_secret"
        ),
        stream_hashes=tuple(
            (bytes(c["secret_sha256"]), c["expires_at"]) for c in creds
            if c["kind"] == "stream_key"
        ),
        policy=_stored_policy(product_id, row[1]),
        session_link=row["session_link"],
    )


def _stored_policy(product_id: str, text: str | None) -> privacy.Policy:
    try:
        return privacy.Policy.from_json(orjson.loads(text) if text else None)
    except (privacy.PolicyError, orjson.JSONDecodeError) as exc:
        # Written by hand with SQL and invalid: fail closed (503, nothing stored) rather than
        # fall back to a laxer default.
        detail = getattr(exc, "detail", type(exc).__name__)
        return privacy.Policy(error=f"invalid privacy_policy for {product_id!r}: {detail}")


def grace(settings_seconds: float) -> timedelta:
    return timedelta(seconds=settings_seconds)
