"""Where a product's payloads go: reading the push configuration of ``POST /products``,
validating the URL, the SSRF allow-list, and the redacted form of a URL for logs and pages.

A product is in push mode when its registration says so in any of the forms the hosted
connector's clients send (``sdk-protocol.md`` §4.2, §5):

* ``integration_config: {"mode": "push", "url": ..., "secret": ...}``;
* ``integration_type: "webhook"`` with ``integration_config: {"url", "secret"}`` or
  ``forward_url`` / ``forward_secret``;
* a non-empty ``forward_url`` (with ``forward_secret``) whatever the integration type.

A URL may carry credentials (``https://user:pass@host/``, or a token in its query string):
only :func:`redact_url` forms of it are ever logged or shown.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from receiver.errors import BadRequestError

MAX_URL_CHARS = 2048
MIN_SECRET_CHARS = 16
MAX_SECRET_CHARS = 512
MAX_ATTEMPTS_LIMIT = 1000
MAX_AGE_LIMIT_SECONDS = 30 * 86400
MAX_IN_FLIGHT_LIMIT = 64
_CONTROL = re.compile(r"[\x00-\x20\x7f]")


@dataclass(frozen=True, slots=True)
class PushTarget:
    url: str
    secret: str | None  # None: none was given (the receiver generates one)
    max_attempts: int | None = None  # None: the installation default
    max_age_seconds: int | None = None
    max_in_flight: int | None = None

    def __repr__(self) -> str:  # never the URL's credentials nor the secret
        return f"PushTarget(url={redact_url(self.url)!r}, secret={'set' if self.secret else 'unset'})"


def from_registration(
    integration_type: str, config: Mapping[str, Any] | None, extra: Mapping[str, Any]
) -> PushTarget | None:
    """The push target a registration asks for, or None when it asks for none (SSE only)."""
    config = config or {}
    forward_url = extra.get("forward_url") or ""
    forward_secret = extra.get("forward_secret") or ""
    if not (config.get("mode") == "push" or integration_type == "webhook" or forward_url):
        return None
    url = config.get("url") or forward_url
    secret = config.get("secret") or forward_secret
    if not isinstance(url, str) or not url:
        raise BadRequestError("push mode needs a destination: integration_config.url or forward_url")
    if not isinstance(secret, str):
        raise BadRequestError("integration_config.secret must be a string")
    if secret and not MIN_SECRET_CHARS <= len(secret) <= MAX_SECRET_CHARS:
        raise BadRequestError(
            f"the push secret must be {MIN_SECRET_CHARS} to {MAX_SECRET_CHARS} characters "
            "(omit it and the receiver generates one)"
        )
    return PushTarget(
        url=url,
        secret=secret or None,
        max_attempts=_bounded_int(config, "max_attempts", 1, MAX_ATTEMPTS_LIMIT),
        max_age_seconds=_bounded_int(config, "max_age_seconds", 1, MAX_AGE_LIMIT_SECONDS),
        max_in_flight=_bounded_int(config, "max_in_flight", 1, MAX_IN_FLIGHT_LIMIT),
    )


def _bounded_int(config: Mapping[str, Any], key: str, low: int, high: int) -> int | None:
    value = config.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequestError(f"integration_config.{key} must be an integer from {low} to {high}")
    return value


def stored_config(config: Mapping[str, Any] | None, target: PushTarget | None) -> dict[str, Any] | None:
    """What ``products.integration_config`` keeps: never the secret, the URL only redacted
    (the real ones live in ``push_endpoints``, read by the deliverer alone)."""
    if config is None:
        return None
    out = {k: v for k, v in config.items() if k not in ("secret", "url")}
    if target is not None:
        out["url"] = redact_url(target.url)
    elif "url" in config:
        out["url"] = redact_url(str(config["url"]))
    return out


# --------------------------------------------------------------------------- URLs and hosts


def validate_url(url: str, allowed_hosts: Sequence[str]) -> str:
    """The URL as given, if it is an absolute http(s) URL to an allowed host; else a 400."""
    if len(url) > MAX_URL_CHARS:
        raise BadRequestError(f"the push URL must be at most {MAX_URL_CHARS} characters")
    if _CONTROL.search(url):
        raise BadRequestError("the push URL must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise BadRequestError("the push URL is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise BadRequestError("the push URL must start with http:// or https://")
    host = parts.hostname
    if not host:
        raise BadRequestError("the push URL has no host")
    if parts.fragment:
        raise BadRequestError("the push URL must not have a #fragment (it would never be sent)")
    if allowed_hosts and not host_allowed(host, allowed_hosts):
        raise BadRequestError(
            f"push to {host!r} is not allowed on this receiver (RECEIVER_PUSH_ALLOWED_HOSTS)"
        )
    return url


def url_host(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def parse_allowed_hosts(text: str) -> tuple[str, ...]:
    """``"hooks.example.com, *.internal.example"`` → normalized entries (empty: no limit)."""
    out = []
    for entry in re.split(r"[\s,]+", text or ""):
        entry = _normal_host(entry)
        if entry:
            out.append(entry)
    return tuple(out)


def host_allowed(host: str, allowed: Sequence[str]) -> bool:
    """Exact host names or IP literals, and ``*.suffix`` for any subdomain of suffix."""
    host = _normal_host(host)
    for entry in allowed:
        if entry.startswith("*."):
            if host.endswith(entry[1:]) and len(host) > len(entry) - 1:
                return True
        elif host == entry:
            return True
    return False


def _normal_host(host: str) -> str:
    host = host.strip().lower().strip("[]").rstrip(".")
    try:
        return str(ipaddress.ip_address(host))  # one spelling per address
    except ValueError:
        return host


def redact_url(url: str) -> str:
    """``scheme://host[:port]/path``, with ``***@`` for credentials and ``?…`` for a query."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = ("***@" if parts.username or parts.password else "") + host
    if port is not None:
        netloc += f":{port}"
    return f"{parts.scheme}://{netloc}{parts.path}" + ("?…" if parts.query else "")
