"""Products and their credentials: creation, rotation, deletion, and the cached lookups that
every webhook, capture and stream request makes.

Secrets are returned once, at creation or rotation, and stored only as SHA-256 hashes.
Rotation never cuts a running integration off: the previous credential keeps working for a
grace period (``RECEIVER_SECRET_GRACE_SECONDS``, 24 h by default) before it expires.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg
import orjson

from receiver import security
from receiver.errors import BadRequestError, ConflictError, ForbiddenError, NotFoundError
from receiver.ingest import privacy
from receiver.storage.store import NOTIFY_PRODUCTS

PRODUCT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
EMAIL_RE = re.compile(r"^[^@\s]{1,200}@[^@\s]{1,200}\.[^@\s]{1,63}$")
CACHE_SECONDS = 10.0
MAX_CACHED = 10_000  # products (and as many capture tokens, and MCP keys) per process
Kind = Literal["webhook_secret", "stream_key", "mcp_key"]
PROVIDERS = ("posthog", "amplitude")
MAX_PROJECT_ID_CHARS = 128
MAX_NAME_CHARS = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
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


def validate_provider(provider: object) -> str:
    if provider not in PROVIDERS:
        raise BadRequestError(f"provider must be one of: {', '.join(PROVIDERS)}")
    return str(provider)


def validate_project_id(project_id: object) -> str:
    text = project_id.strip() if isinstance(project_id, str) else ""
    if not text or len(text) > MAX_PROJECT_ID_CHARS or _CONTROL.search(text):
        raise BadRequestError(
            f"provider_project_id must be 1-{MAX_PROJECT_ID_CHARS} characters without control "
            "characters (your PostHog or Amplitude project id)"
        )
    return text


def validate_name(name: object) -> str | None:
    if name is None:
        return None
    text = name.strip() if isinstance(name, str) else None
    if text is None or len(text) > MAX_NAME_CHARS or _CONTROL.search(text):
        raise BadRequestError(f"name must be a string of at most {MAX_NAME_CHARS} characters")
    return text or None


def urls(base_url: str, product_id: str) -> dict[str, str]:
    """Every URL of a product, whichever way it was registered."""
    return {
        "webhook_url": f"{base_url}/webhook/{product_id}",
        "ingest_url": f"{base_url}/ingest/{product_id}",
        "stream_url": f"{base_url}/stream/{product_id}",
        "capture_url": f"{base_url}/e/",
        "mcp_url": f"{base_url}/mcp",
        "live_activity_url": f"{base_url}/users/{product_id}/{{user_id}}/live-activity",
    }


@dataclass(frozen=True, slots=True)
class IssuedCredentials:
    """What an operator sees exactly once after create/rotate."""

    product_id: str
    webhook_secret: str | None
    stream_key: str | None
    stream_key_id: str | None
    capture_token: str
    mcp_key: str | None = None
    mcp_key_id: str | None = None

    def as_dict(self, base_url: str) -> dict[str, Any]:
        """The 0.7.2 ``POST /products`` answer (unkey_key/unkey_key_id), plus what we add."""
        every = urls(base_url, self.product_id)
        out: dict[str, Any] = {
            "product_id": self.product_id,
            **{k: every[k] for k in ("webhook_url", "stream_url", "capture_url")},
            "capture_token": self.capture_token,
        }
        if self.webhook_secret:
            out["webhook_secret"] = self.webhook_secret
        if self.stream_key:
            out["stream_key"] = self.stream_key
            out["unkey_key"] = self.stream_key
            out["unkey_key_id"] = self.stream_key_id
        if self.mcp_key:
            out["mcp_key"] = self.mcp_key
            out["mcp_key_id"] = self.mcp_key_id
        out["ingest_url"] = every["ingest_url"]
        out["mcp_url"] = every["mcp_url"]
        out["live_activity_url"] = every["live_activity_url"]
        return out


@dataclass(frozen=True, slots=True)
class ProjectRegistration:
    """A registration by analytics project id: what 0.13.0's ``onboard_product`` reads back."""

    issued: IssuedCredentials
    provider: str
    provider_project_id: str
    name: str | None
    owner_token: str | None  # only on first registration
    created: bool

    def as_dict(self, base_url: str) -> dict[str, Any]:
        """The nested body of ``_aws_result_from_response``; every path's URL and key included."""
        c = self.issued
        every = urls(base_url, c.product_id)
        ingest_auth = (
            "x-posthog-secret: <ingest_secret> (or Authorization: Bearer <ingest_secret>)"
            if self.provider == "posthog" else "Authorization: Bearer <ingest_secret>"
        )
        credentials: dict[str, Any] = {
            "ingest_secret": c.webhook_secret,
            "mcp_key": c.mcp_key,
            "mcp_key_id": c.mcp_key_id,
            "stream_key": c.stream_key,
            "stream_key_id": c.stream_key_id,
            "capture_token": c.capture_token,
        }
        if self.owner_token:
            credentials["owner_token"] = self.owner_token
        return {
            "product_id": c.product_id,
            "provider": self.provider,
            "provider_project_id": self.provider_project_id,
            "name": self.name or c.product_id,
            "created": self.created,
            "credentials": credentials,
            "setup": {
                "ingest_url": every["ingest_url"],
                "ingest_auth": ingest_auth,
                "mcp_url": every["mcp_url"],
                "mcp_auth": "Authorization: Bearer <mcp_key>",
                "live_activity_url": every["live_activity_url"],
                "stream_url": every["stream_url"],
                "stream_auth": "Authorization: Bearer <stream_key>",
                "webhook_url": every["webhook_url"],
                "capture_url": every["capture_url"],
            },
        }


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
            "SELECT capture_token, provider FROM products WHERE product_id = $1 FOR UPDATE",
            product_id,
        )
        if existing is not None and not force:
            raise ConflictError(
                f"product {product_id!r} is already registered; "
                "pass force_reregister=true to rotate its credentials"
            )
        if existing is not None and existing["provider"] is not None:
            # Its owner token guards rotation: force_reregister must not be a way around it.
            raise ForbiddenError(
                f"product {product_id!r} was registered by {existing['provider']} project id; "
                "register that project again with its owner_token to rotate its credentials"
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
            for kind in ("webhook_secret", "stream_key", "mcp_key"):
                await _expire_current(conn, product_id, kind, grace_seconds)
        await _insert_credential(conn, product_id, "webhook_secret", webhook_secret)
        key_id = await _insert_credential(conn, product_id, "stream_key", stream_key)
        mcp_key = security.new_mcp_key()
        mcp_key_id = await _insert_credential(conn, product_id, "mcp_key", mcp_key)
        await _notify(conn, product_id)
    return IssuedCredentials(
        product_id, webhook_secret, stream_key, key_id, capture_token, mcp_key, mcp_key_id
    )


async def register_by_project(
    conn: asyncpg.Connection,
    *,
    provider: str,
    provider_project_id: str,
    contact_email: str,
    name: str | None = None,
    ingest_secret: str | None = None,
    owner_token: str | None = None,
    grace_seconds: float = 0,
) -> ProjectRegistration:
    """Register an analytics project (autoplay-sdk 0.13.0), or rotate its credentials.

    The first registration issues an opaque product id and an owner token, returned once. The
    same (provider, project id) again is refused (403) unless the owner token comes with it;
    then every credential rotates, the previous ones working for ``grace_seconds``. Two first
    registrations racing each other: one wins, the other gets 409.
    """
    provider = validate_provider(provider)
    provider_project_id = validate_project_id(provider_project_id)
    contact_email = validate_email(contact_email)
    name = validate_name(name)
    if not ingest_secret or len(ingest_secret) < 32:
        ingest_secret = security.new_webhook_secret()
    async with conn.transaction():
        row = await conn.fetchrow(
            """
            SELECT product_id, capture_token, owner_token_sha256 FROM products
            WHERE provider = $1 AND provider_project_id = $2 FOR UPDATE
            """,
            provider, provider_project_id,
        )
        if row is None:
            product_id = security.new_product_id()
            issued_owner: str | None = security.new_owner_token()
            capture_token = security.new_capture_token()
            try:
                async with conn.transaction():
                    await conn.execute(
                        """
                        INSERT INTO products (product_id, contact_email, integration_type,
                                              integration_config, capture_token, provider,
                                              provider_project_id, name, owner_token_sha256)
                        VALUES ($1, $2, 'event_stream', '{"mode": "sse"}'::jsonb, $3, $4, $5, $6, $7)
                        """,
                        product_id, contact_email, capture_token, provider, provider_project_id,
                        name, security.hash_secret(issued_owner),
                    )
            except asyncpg.UniqueViolationError:
                raise ConflictError(
                    f"{provider} project {provider_project_id!r} was registered concurrently; "
                    "retry with its owner_token to rotate its credentials"
                ) from None
        else:
            stored = row["owner_token_sha256"]
            if stored is None or not security.matches_any(owner_token, [bytes(stored)]):
                raise ForbiddenError(
                    f"{provider} project {provider_project_id!r} is already registered; "
                    "pass its owner_token to rotate its credentials"
                )
            product_id, capture_token, issued_owner = row["product_id"], row["capture_token"], None
            await conn.execute(
                """
                UPDATE products SET contact_email = $2, name = coalesce($3, name), updated_at = now()
                WHERE product_id = $1
                """,
                product_id, contact_email, name,
            )
            for kind in ("webhook_secret", "stream_key", "mcp_key"):
                await _expire_current(conn, product_id, kind, grace_seconds)
        await _insert_credential(conn, product_id, "webhook_secret", ingest_secret)
        stream_key = security.new_stream_key()
        stream_key_id = await _insert_credential(conn, product_id, "stream_key", stream_key)
        mcp_key = security.new_mcp_key()
        mcp_key_id = await _insert_credential(conn, product_id, "mcp_key", mcp_key)
        await _notify(conn, product_id)
    issued = IssuedCredentials(
        product_id, ingest_secret, stream_key, stream_key_id, capture_token, mcp_key, mcp_key_id
    )
    return ProjectRegistration(
        issued, provider, provider_project_id, name, issued_owner, created=row is None
    )


async def rotate(
    conn: asyncpg.Connection,
    product_id: str,
    *,
    webhook_secret: bool = True,
    stream_key: bool = False,
    mcp_key: bool = False,
    grace_seconds: float,
) -> IssuedCredentials:
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT capture_token FROM products WHERE product_id = $1 FOR UPDATE", product_id
        )
        if row is None:
            raise NotFoundError(f"unknown product {product_id!r}")
        new_secret = new_key = key_id = new_mcp = mcp_id = None
        if webhook_secret:
            await _expire_current(conn, product_id, "webhook_secret", grace_seconds)
            new_secret = security.new_webhook_secret()
            await _insert_credential(conn, product_id, "webhook_secret", new_secret)
        if stream_key:
            await _expire_current(conn, product_id, "stream_key", grace_seconds)
            new_key = security.new_stream_key()
            key_id = await _insert_credential(conn, product_id, "stream_key", new_key)
        if mcp_key:
            await _expire_current(conn, product_id, "mcp_key", grace_seconds)
            new_mcp = security.new_mcp_key()
            mcp_id = await _insert_credential(conn, product_id, "mcp_key", new_mcp)
        await conn.execute(
            "UPDATE products SET updated_at = now() WHERE product_id = $1", product_id
        )
        await _notify(conn, product_id)
    return IssuedCredentials(
        product_id, new_secret, new_key, key_id, row["capture_token"], new_mcp, mcp_id
    )


async def get_policy(conn: asyncpg.Connection, product_id: str) -> privacy.Policy:
    row = await conn.fetchrow(
        "SELECT privacy_policy::text FROM products WHERE product_id = $1", product_id
    )
    if row is None:
        raise NotFoundError(f"unknown product {product_id!r}")
    return privacy.Policy.from_json(orjson.loads(row[0]), stored=True)


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
               created_at, updated_at, privacy_policy::text AS privacy_policy,
               provider, provider_project_id, name
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
    out["privacy_policy"] = privacy.Policy.from_json(
        orjson.loads(row["privacy_policy"]), stored=True
    ).to_json()
    out["credentials"] = [dict(c) for c in creds]
    for key in ("provider", "provider_project_id", "name"):
        if out[key] is None:
            del out[key]
    return out


async def list_all(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT product_id, contact_email, provider, provider_project_id, last_position, created_at "
        "FROM products ORDER BY 1"
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
    mcp_hashes: tuple[tuple[bytes, datetime | None], ...] = ()
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

    def mcp_ok(self, presented: str | None) -> bool:
        return self._check(presented, self.mcp_hashes)


@dataclass
class _Entry:
    value: ProductAuth | None
    at: float


@dataclass
class Directory:
    """A bounded LRU cache with a TTL in front of the products table.

    Rejections for unknown products and wrong keys must stay cheap (the stock SDK retries a
    rejected stream about once a second, forever), so negative answers are cached too. The
    cache holds at most ``max_entries`` products and as many capture tokens, evicting the least
    recently used one at a time: clearing it all when full would let a scan of made-up names
    flush every real product out, and each of their next requests would cost a round trip.
    ``receiver_products`` notifications from any process invalidate entries early.
    """

    pool: asyncpg.Pool
    ttl: float = CACHE_SECONDS
    max_entries: int = MAX_CACHED
    _entries: OrderedDict[str, _Entry] = field(default_factory=OrderedDict)
    _tokens: OrderedDict[str, tuple[str | None, float]] = field(default_factory=OrderedDict)
    _mcp_keys: OrderedDict[bytes, tuple[str | None, float]] = field(default_factory=OrderedDict)

    def invalidate(self, product_id: str | None = None) -> None:
        if product_id is None:
            self._entries.clear()
            self._tokens.clear()
            self._mcp_keys.clear()
            return
        self._entries.pop(product_id, None)
        # Its token, and negative answers (a new product may own a token looked up before).
        for token in [t for t, (pid, _) in self._tokens.items() if pid in (product_id, None)]:
            del self._tokens[token]
        # A rotation retires keys: forget every key's answer (they are re-read by index).
        self._mcp_keys.clear()

    def known(self, product_id: str) -> bool:
        """The product existed when last looked up (however long ago): no database needed to
        say it is real, so a client locked out for scanning unknown names still reaches it."""
        entry = self._entries.get(product_id)
        return entry is not None and entry.value is not None

    def known_token(self, token: str) -> bool:
        hit = self._tokens.get(token)
        return hit is not None and hit[0] is not None

    async def get(self, product_id: str) -> ProductAuth | None:
        now = time.monotonic()
        entry = self._entries.get(product_id)
        if entry is not None and now - entry.at < self.ttl:
            self._entries.move_to_end(product_id)
            return entry.value
        if not PRODUCT_ID_RE.fullmatch(product_id):
            return None
        async with self.pool.acquire() as conn:
            value = await load(conn, product_id)
        _put(self._entries, product_id, _Entry(value, now), self.max_entries)
        return value

    async def by_capture_token(self, token: str) -> ProductAuth | None:
        now = time.monotonic()
        hit = self._tokens.get(token)
        if hit is not None and now - hit[1] < self.ttl:
            self._tokens.move_to_end(token)
            return await self.get(hit[0]) if hit[0] else None
        async with self.pool.acquire() as conn:
            product_id = await conn.fetchval(
                "SELECT product_id FROM products WHERE capture_token = $1", token
            )
        _put(self._tokens, token, (product_id, now), self.max_entries)
        return await self.get(product_id) if product_id else None

    async def by_mcp_key(self, presented: str | None) -> ProductAuth | None:
        """The product a live MCP key belongs to, or None (unknown, expired or missing key).

        Keys are found by their SHA-256 (an index lookup, cached like the other answers); the
        product's own check then compares in constant time and enforces expiry.
        """
        if not presented:
            return None
        digest = security.hash_secret(presented)
        now = time.monotonic()
        hit = self._mcp_keys.get(digest)
        if hit is None or now - hit[1] >= self.ttl:
            async with self.pool.acquire() as conn:
                product_id = await conn.fetchval(
                    """
                    SELECT product_id FROM credentials
                    WHERE kind = 'mcp_key' AND secret_sha256 = $1
                      AND (expires_at IS NULL OR expires_at > now())
                    LIMIT 1
                    """,
                    digest,
                )
            hit = (product_id, now)
            _put(self._mcp_keys, digest, hit, self.max_entries)
        product = await self.get(hit[0]) if hit[0] else None
        return product if product is not None and product.mcp_ok(presented) else None


def _put(cache: OrderedDict[Any, Any], key: Any, value: Any, limit: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > limit:
        cache.popitem(last=False)


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
        mcp_hashes=tuple(
            (bytes(c["secret_sha256"]), c["expires_at"]) for c in creds if c["kind"] == "mcp_key"
        ),
        session_link=row["session_link"],
    )


def _stored_policy(product_id: str, text: str | None) -> privacy.Policy:
    try:
        return privacy.Policy.from_json(orjson.loads(text) if text else None, stored=True)
    except (privacy.PolicyError, orjson.JSONDecodeError) as exc:
        # Written by hand with SQL and invalid: fail closed (503, nothing stored) rather than
        # fall back to a laxer default.
        detail = getattr(exc, "detail", type(exc).__name__)
        return privacy.Policy(error=f"invalid privacy_policy for {product_id!r}: {detail}")


def grace(settings_seconds: float) -> timedelta:
    return timedelta(seconds=settings_seconds)
