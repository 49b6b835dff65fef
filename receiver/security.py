"""Credential generation, hashing and constant-time verification.

Webhook secrets and stream keys are 256-bit random tokens, so a single SHA-256 is the right
hash: a slow KDF protects low-entropy passwords and would only make every rejection (which the
SDK retries once a second, forever) expensive. Only hashes are stored.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Iterable

WEBHOOK_SECRET_BYTES = 32
STREAM_KEY_PREFIX = "rsk_"
KEY_ID_PREFIX = "key_"
CAPTURE_TOKEN_PREFIX = "phc_"  # noqa: S105 - a prefix, not a secret
MCP_KEY_PREFIX = "rmk_"
OWNER_TOKEN_PREFIX = "rot_"  # noqa: S105 - a prefix, not a secret
PRODUCT_ID_PREFIX = "prod_"
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def new_webhook_secret() -> str:
    return secrets.token_urlsafe(WEBHOOK_SECRET_BYTES)


def new_stream_key() -> str:
    return STREAM_KEY_PREFIX + secrets.token_urlsafe(32)


def new_mcp_key() -> str:
    return MCP_KEY_PREFIX + secrets.token_urlsafe(32)


def new_owner_token() -> str:
    return OWNER_TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_product_id() -> str:
    """An opaque product id (``prod_`` + 22 letters and digits, ~131 bits), as the hosted one."""
    return PRODUCT_ID_PREFIX + "".join(secrets.choice(_ALNUM) for _ in range(22))


def new_key_id() -> str:
    return KEY_ID_PREFIX + secrets.token_hex(8)


def new_capture_token() -> str:
    # posthog-js accepts any project key but rejects personal (phx_) keys; phc_ reads as "project".
    return CAPTURE_TOKEN_PREFIX + secrets.token_urlsafe(24)


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def matches_any(presented: str | None, hashes: Iterable[bytes]) -> bool:
    """True when ``presented`` hashes to one of ``hashes``.

    Every candidate is compared, with no early exit, so timing reveals neither which
    candidate matched nor how many exist beyond their count.
    """
    if not presented:
        # Still hash something so a missing header costs the same as a wrong one.
        presented = ""
    digest = hash_secret(presented)
    found = False
    for candidate in hashes:
        found |= hmac.compare_digest(candidate, digest)
    return found and bool(presented)


def equals(presented: str | None, expected: str) -> bool:
    return hmac.compare_digest(
        hash_secret(presented or ""), hash_secret(expected)
    ) and bool(presented)


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    value = value.strip()
    return value or None


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return host == "localhost"


def mask(value: str | None, keep: int = 4) -> str:
    """A log-safe stand-in for a secret or an email."""
    if not value:
        return "-"
    if "@" in value:
        local, _, domain = value.partition("@")
        return f"{local[:1]}***@{domain}"
    return value[:keep] + "…" if len(value) > keep else "…"
