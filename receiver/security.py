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
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

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


# Headers a proxy adds: the socket's loopback peer is then the proxy, not the caller.
FORWARDING_HEADERS = (
    "forwarded", "x-forwarded-for", "x-real-ip", "x-forwarded-host", "x-forwarded-proto", "via",
)
_TRUSTED_FETCH_SITES = frozenset({"same-origin", "none"})


def split_host(value: str | None) -> tuple[str, int | None] | None:
    """``host[:port]`` (a Host header, or an origin's authority) as (lower-case host, port);
    IPv6 literals lose their brackets. None when it cannot be a host at all."""
    if not value:
        return None
    value = value.strip().lower()
    port: int | None = None
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:]
    else:
        host, _, port_text = value.partition(":")
    if port_text:
        if not port_text.isdigit() or len(port_text) > 5:
            return None
        port = int(port_text)
    return (host, port) if host else None


def _origin_authority(origin: str) -> tuple[str, str, int] | None:
    scheme, sep, rest = origin.strip().lower().partition("://")
    if not sep or scheme not in ("http", "https") or "/" in rest:
        return None
    parsed = split_host(rest)
    if parsed is None:
        return None
    host, port = parsed
    return scheme, host, port if port is not None else (443 if scheme == "https" else 80)


def trusted_local(
    peer: str | None, headers: Mapping[str, str], public_url: str | None = None
) -> bool:
    """May this request be trusted as coming from the receiver's own machine?

    A loopback peer is not enough: a proxy on the machine (ssh -R, socat, stunnel, HAProxy in
    TCP mode) makes every caller a loopback peer, and a web page open on the machine reaches
    loopback ports too, through DNS rebinding (``Host: rebind.attacker.example``). So all of:

    * the socket's peer is a loopback address, and no proxy forwarding header is present;
    * the ``Host`` names this machine: ``localhost``, a loopback address, or the host of
      ``RECEIVER_PUBLIC_URL``;
    * a browser's ``Origin``, if sent, is that same host and port (the admin page itself), and
      ``Sec-Fetch-Site``, if sent, is ``same-origin`` or ``none`` (a typed address).

    ``headers`` has lower-case keys (Starlette's ``Headers`` matches any case).
    """
    if not is_loopback(peer):
        return False
    if any(name in headers for name in FORWARDING_HEADERS):
        return False
    parsed = split_host(headers.get("host"))
    if parsed is None or not local_host(parsed[0], public_url):
        return False
    site = headers.get("sec-fetch-site")
    if site is not None and site.strip().lower() not in _TRUSTED_FETCH_SITES:
        return False
    origin = headers.get("origin")
    if origin is not None:
        authority = _origin_authority(origin)
        if authority is None:
            return False  # "null" (sandboxed frames, file: pages) or garbage
        scheme, origin_host, origin_port = authority
        host, port = parsed
        if port is None:
            port = 443 if scheme == "https" else 80
        if origin_host != host or origin_port != port:
            return False
    return True


def local_host(host: str, public_url: str | None = None) -> bool:
    """``host`` (lower case, no port) names this machine or the configured public URL's host."""
    if host == "localhost" or is_loopback(host):
        return True
    if public_url:
        public = split_host(urlsplit(public_url).netloc.rpartition("@")[2])
        return public is not None and host == public[0]
    return False


def admin_allowed(
    *,
    token: str | None,
    allow_loopback: bool,
    authorization: str | None,
    peer: str | None,
    headers: Mapping[str, str],
    public_url: str | None,
) -> bool:
    """The one admin rule (``POST /products``, ``/admin/api/*``): the Bearer token when one is
    presented and configured (compared in constant time), else a trusted local caller while
    ``RECEIVER_ADMIN_ALLOW_LOOPBACK`` is on. A wrong token is never rescued by loopback."""
    presented = bearer_token(authorization)
    if token is not None and presented is not None:
        return equals(presented, token)
    return allow_loopback and trusted_local(peer, headers, public_url)


def mask(value: str | None, keep: int = 4) -> str:
    """A log-safe stand-in for a secret or an email."""
    if not value:
        return "-"
    if "@" in value:
        local, _, domain = value.partition("@")
        return f"{local[:1]}***@{domain}"
    return value[:keep] + "…" if len(value) > keep else "…"
