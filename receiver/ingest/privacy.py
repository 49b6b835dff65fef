"""Per-product PII policy, applied to every event before it is stored or streamed.

Pure functions over :class:`~receiver.ingest.normalize.NormalizedEvent`: no I/O, no logging. The
writer calls :func:`apply` on every event of every route (webhook and capture) before the
event reaches the database or any subscriber, so nothing a policy removes is ever stored,
streamed or logged by the receiver.

A policy is stored as ``products.privacy_policy`` (JSONB) and has four parts:

``email``
    ``keep`` (default): the email column, the frame's ``email`` and email-valued payload
    properties are kept — the tutorial's bridge takes the user's name from it.
    ``hash``: replaced by ``h:<hex>``, a keyed HMAC-SHA256 of the lower-cased address under the
    installation's ``RECEIVER_PII_HASH_KEY``: stable, so analysts can still count and join
    users, and not reversible by guessing addresses without the key.
    ``drop``: removed. A ``distinct_id`` that is an email address follows the same rule, and
    email addresses inside free text (element text, titles, URLs, payload strings) are
    always redacted under ``hash`` and ``drop``.
``query``
    ``keep`` (default) or ``strip``: drop the query string and fragment of ``current_url``,
    ``referrer``, ``link_target`` and of every URL in the raw payload (URL-valued properties,
    anything starting with ``http(s)://``, and the ``href`` attributes of ``elements_chain``).
``builtin_redactions``
    Named patterns redacted to ``[redacted]`` in element text, titles, URLs and every string of
    the raw payload: ``card_number`` (13-19 digits, optional space or dash separators,
    Luhn-checked) and ``email``. Both are on by default.
``redact``
    Extra regular expressions (Python syntax), applied in the same places.

Whatever the policy, IP addresses are never stored: ``$ip``-like keys are removed from the raw
payload, and so is any property whose whole value is an IP address.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from receiver.delivery.wire import StreamRow
from receiver.errors import BadRequestError, UnavailableError
from receiver.ingest import normalize
from receiver.ingest.normalize import NormalizedEvent

REDACTED = "[redacted]"
EMAIL_MODES = ("keep", "hash", "drop")
QUERY_MODES = ("keep", "strip")
MAX_PATTERNS = 50
MAX_PATTERN_CHARS = 500

# An email address, also URL-encoded (alice%40example.com) as it appears in query strings.
EMAIL_RE = re.compile(
    r"[A-Za-z0-9._%+\-]{1,64}(?:@|%40)[A-Za-z0-9](?:[A-Za-z0-9\-]{0,62}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,62}[A-Za-z0-9])?)*\.[A-Za-z]{2,63}",
    re.IGNORECASE,
)
_EMAIL_FULL = re.compile(r"[^@\s]{1,200}@[^@\s]{1,200}\.[^@\s]{1,63}")
# 13-19 digits, single spaces or dashes allowed between them, not part of a longer number.
CARD_RE = re.compile(r"(?<![\d])\d(?:[ \-]?\d){12,18}(?![\d])")
_HASHED = re.compile(r"h:[0-9a-f]{64}")

# Payload keys (lower-cased) whose value is an IP address by definition.
IP_KEYS = frozenset(
    {
        "$ip", "ip", "ip_address", "$ip_address", "ipaddress", "client_ip", "remote_addr",
        "remote_ip", "x-forwarded-for", "x_forwarded_for", "x-real-ip", "x_real_ip", "forwarded",
    }
)
# Keys holding a user identifier: governed by the email mode when the value is an address.
IDENTITY_KEYS = frozenset(
    {
        "distinct_id", "$distinct_id", "$user_id", "user_id", "$anon_distinct_id", "alias",
        "$device_id", "person_id", "$identified_id", "username", "$username", "name",
    }
)
# Keys whose values are opaque identifiers the receiver relies on: never rewritten.
ID_KEYS = frozenset({"uuid", "$session_id", "$window_id", "$insert_id", "event_uuid", "session_id"})
_URL_KEY_SUFFIXES = ("url", "href", "referrer", "link_destination", "referer")
_CHAIN_KEYS = frozenset({"elements_chain", "$elements_chain"})
_CHAIN_HREF = re.compile(r'((?:attr__)?href=")((?:[^"\\]|\\.)*)(")')


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _redact_cards(text: str) -> str:
    if len(text) < 13:
        return text

    def sub(m: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", m.group(0))
        return REDACTED if 13 <= len(digits) <= 19 and luhn_ok(digits) else m.group(0)

    return CARD_RE.sub(sub, text)


def _redact_emails(text: str) -> str:
    if "@" not in text and "%40" not in text:
        return text
    return EMAIL_RE.sub(REDACTED, text)


BUILTINS: dict[str, Callable[[str], str]] = {
    "card_number": _redact_cards,
    "email": _redact_emails,
}
DEFAULT_BUILTINS = ("card_number", "email")


class PolicyError(BadRequestError):
    """An invalid privacy policy (400 over HTTP, an error message on the CLI)."""


class PolicyUnusableError(UnavailableError):
    """The stored policy cannot be applied: store nothing and let the sender retry (503)."""


class HashKeyMissingError(PolicyUnusableError):
    """A product hashes emails but this process has no RECEIVER_PII_HASH_KEY: store nothing."""


@dataclass(frozen=True, slots=True)
class Policy:
    email: str = "keep"
    query: str = "keep"
    builtin_redactions: tuple[str, ...] = DEFAULT_BUILTINS
    redact: tuple[str, ...] = ()
    error: str | None = None  # set for an unreadable stored policy: apply() refuses (fail closed)
    _patterns: tuple[re.Pattern[str], ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Policy:
        """Validate a stored or submitted policy; missing keys take their default."""
        if data is None:
            return DEFAULT
        if not isinstance(data, Mapping):
            raise PolicyError("privacy_policy must be a JSON object")
        unknown = set(data) - {"email", "query", "builtin_redactions", "redact"}
        if unknown:
            raise PolicyError(f"privacy_policy has unknown keys: {', '.join(sorted(unknown))}")
        email = data.get("email", "keep")
        if email not in EMAIL_MODES:
            raise PolicyError(f"privacy_policy.email must be one of {', '.join(EMAIL_MODES)}")
        query = data.get("query", "keep")
        if query not in QUERY_MODES:
            raise PolicyError(f"privacy_policy.query must be one of {', '.join(QUERY_MODES)}")
        builtins = data.get("builtin_redactions", list(DEFAULT_BUILTINS))
        if not isinstance(builtins, list | tuple) or not all(isinstance(b, str) for b in builtins):
            raise PolicyError("privacy_policy.builtin_redactions must be a list of names")
        bad = [b for b in builtins if b not in BUILTINS]
        if bad:
            raise PolicyError(
                f"unknown builtin redaction {bad[0]!r}; known: {', '.join(BUILTINS)}"
            )
        redact = data.get("redact", [])
        if not isinstance(redact, list | tuple) or not all(isinstance(p, str) for p in redact):
            raise PolicyError("privacy_policy.redact must be a list of regular expressions")
        if len(redact) > MAX_PATTERNS:
            raise PolicyError(f"privacy_policy.redact has more than {MAX_PATTERNS} patterns")
        compiled = []
        for pattern in redact:
            if not pattern or len(pattern) > MAX_PATTERN_CHARS:
                raise PolicyError(f"redaction patterns must be 1-{MAX_PATTERN_CHARS} characters")
            try:
                rx = re.compile(pattern)
            except re.error as exc:
                raise PolicyError(f"invalid redaction pattern {pattern!r}: {exc}") from None
            if rx.fullmatch(""):
                raise PolicyError(f"redaction pattern {pattern!r} matches the empty string")
            compiled.append(rx)
        return cls(
            email=email,
            query=query,
            builtin_redactions=tuple(dict.fromkeys(builtins)),
            redact=tuple(redact),
            _patterns=tuple(compiled),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "email": self.email,
            "query": self.query,
            "builtin_redactions": list(self.builtin_redactions),
            "redact": list(self.redact),
        }

    @property
    def needs_hash_key(self) -> bool:
        return self.email == "hash"

    def summary(self) -> str:
        parts = [f"email={self.email}", f"query={self.query}"]
        parts.append("redact=" + ",".join([*self.builtin_redactions, *(["custom"] if self.redact else [])]))
        return " ".join(parts)


DEFAULT = Policy()


def hash_email(value: str, key: bytes) -> str:
    """``h:<hex>``: HMAC-SHA256 of the trimmed, lower-cased address under the installation key."""
    if _HASHED.fullmatch(value):
        return value  # already hashed (idempotent)
    digest = hmac.new(key, value.strip().lower().encode("utf-8", "surrogatepass"), hashlib.sha256)
    return "h:" + digest.hexdigest()


def strip_query(url: str) -> str:
    """The URL without its query string and fragment (works on relative URLs too)."""
    cut = len(url)
    for sep in ("?", "#"):
        i = url.find(sep)
        if 0 <= i < cut:
            cut = i
    return url[:cut]


_IP_CHARS = re.compile(r"\s*\[?[0-9A-Fa-f:.]+(?:%[\w.\-]+)?\]?(?::\d+)?\s*")


def looks_like_ip(value: str) -> bool:
    if not 2 <= len(value) <= 80 or not _IP_CHARS.fullmatch(value):
        return False
    text = value.strip()
    if "." not in text and ":" not in text:
        return False
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    candidates = [text.split("%", 1)[0]]
    if text.count(":") == 1:  # v4:port
        candidates.append(text.split(":", 1)[0])
    for candidate in candidates:
        try:
            ipaddress.ip_address(candidate)
        except ValueError:
            continue
        return True
    return False


def _is_ip_key(key: str) -> bool:
    return key in IP_KEYS or key.endswith(("_ip", "$ip"))


def _is_email_key(key: str) -> bool:
    return "email" in key or "e-mail" in key


def _is_url_key(key: str) -> bool:
    return key.endswith(_URL_KEY_SUFFIXES)


class _Scrubber:
    def __init__(self, policy: Policy, hash_key: bytes | None) -> None:
        if policy.error:
            raise PolicyUnusableError(policy.error, retry_after=5)
        if policy.needs_hash_key and not hash_key:
            raise HashKeyMissingError(
                "this product hashes emails but RECEIVER_PII_HASH_KEY is not set", retry_after=5
            )
        self.policy = policy
        self.hash_key = hash_key or b""
        self.strip = policy.query == "strip"
        steps: list[Callable[[str], str]] = []
        if policy.email != "keep" and "email" not in policy.builtin_redactions:
            steps.append(_redact_emails)
        steps.extend(BUILTINS[name] for name in policy.builtin_redactions)
        for rx in policy._patterns:
            steps.append(lambda s, rx=rx: rx.sub(REDACTED, s))
        self.steps = tuple(steps)

    # ------------------------------------------------------------------ values

    def email(self, value: str | None) -> str | None:
        """An email-valued field under the email mode."""
        if value is None:
            return None
        mode = self.policy.email
        if mode == "keep":
            return value
        if mode == "hash":
            return hash_email(value, self.hash_key)
        return None

    def identity(self, value: str | None) -> str | None:
        """A user identifier: follows the email mode only when it is an email address."""
        if value is None or not _EMAIL_FULL.fullmatch(value.strip()):
            return value
        return self.email(value)

    def text(self, value: str | None) -> str | None:
        if not value:
            return value
        for step in self.steps:
            value = step(value)
        return value

    def url(self, value: str | None) -> str | None:
        if not value:
            return value
        if self.strip:
            value = strip_query(value)
        return self.text(value)

    def chain(self, value: str) -> str:
        if self.strip:
            value = _CHAIN_HREF.sub(lambda m: m.group(1) + strip_query(m.group(2)) + m.group(3), value)
        return self.text(value) or value

    # ------------------------------------------------------------------ payload

    def payload(self, value: Any) -> Any:
        return self._walk(value, "")

    def _string(self, key: str, value: str) -> str | None:
        """The stored form of one string property (None: drop it)."""
        if looks_like_ip(value):
            return None
        if _is_email_key(key) and "@" in value:
            return self.email(value)
        if key in IDENTITY_KEYS and _EMAIL_FULL.fullmatch(value.strip()):
            return self.email(value)
        if key in ID_KEYS:
            return value
        if key in _CHAIN_KEYS:
            return self.chain(value)
        if _is_url_key(key) or value.startswith(("http://", "https://", "//")):
            return self.url(value)
        return self.text(value)

    def _walk(self, value: Any, key: str) -> Any:
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for k, v in value.items():
                lk = k.lower() if isinstance(k, str) else str(k)
                if _is_ip_key(lk):
                    continue
                if isinstance(v, str):
                    cleaned = self._string(lk, v)
                    if cleaned is None:
                        continue
                    v = cleaned
                else:
                    v = self._walk(v, lk)
                out[self.text(k) or k] = v
            return out
        if isinstance(value, list):
            items = []
            for item in value:
                if isinstance(item, str):
                    cleaned = self._string(key, item)
                    if cleaned is not None:
                        items.append(cleaned)
                else:
                    items.append(self._walk(item, key))
            return items
        if isinstance(value, str):
            return self._string(key, value)
        return value


def apply(policy: Policy, event: NormalizedEvent, hash_key: bytes | None = None) -> NormalizedEvent:
    """The event as it may be stored and streamed under ``policy``.

    Raises :class:`HashKeyMissingError` (a retryable 503: nothing is stored) when the policy
    hashes emails and no key is configured.
    """
    s = _Scrubber(policy, hash_key)
    canonical = s.url(event.canonical_url)
    element_text = s.text(event.element_text)
    element_id = s.text(event.element_id)
    input_name = s.text(event.input_name)
    # Titles and descriptions are derived from the page name and the element's label, which
    # the normalizer reshaped ("…/orders/ACME-1" → "Acme 1"): rewrite what changed from the
    # redacted source, then scan what is left.
    title, description = event.title, event.description
    swaps = [(normalize.page_name(event.canonical_url), normalize.page_name(canonical))]
    for old, new in ((event.element_text, element_text), (event.element_id, element_id),
                     (event.input_name, input_name)):
        swaps.append((normalize._label(old) or "", normalize._label(new) or REDACTED))
    for old, new in swaps:
        if old and old != new:
            title = title.replace(old, new)
            description = description.replace(old, new).replace(old.lower(), new.lower())
    return replace(
        event,
        distinct_id=s.identity(event.distinct_id),
        email=s.email(event.email),
        current_url=s.url(event.current_url),
        canonical_url=canonical,
        pathname=s.url(event.pathname),
        referrer=s.url(event.referrer),
        link_target=s.url(event.link_target),
        element_id=element_id,
        element_text=element_text,
        input_name=input_name,
        title=s.text(title) or title,
        description=s.text(description) or description,
        payload=s.payload(event.payload),
    )


# --------------------------------------------------------------------------- reads


def rows_as_read(
    policy: Policy, rows: list[StreamRow], hash_key: bytes | None = None
) -> list[StreamRow]:
    """Stored events as an agent may read them under the product's policy *now*.

    Stored rows already follow the policy in force when they arrived; re-applying is idempotent
    for the same policy, and a policy made stricter since then (email dropped or hashed, query
    strings stripped, a new redaction) also covers what was stored before it.
    """
    s = _Scrubber(policy, hash_key)
    return [
        replace(
            row,
            distinct_id=s.identity(row.distinct_id),
            email=s.email(row.email),
            current_url=s.url(row.current_url),
            canonical_url=s.url(row.canonical_url),
            title=s.text(row.title) or row.title,
            description=s.text(row.description) or row.description,
        )
        for row in rows
    ]


def identity_as_stored(policy: Policy, user_id: str, hash_key: bytes | None = None) -> list[str]:
    """The ``distinct_id`` values a user id may be stored under: as given, and as the policy
    stores it (an email address hashed under ``email: hash``), so lookups by the id an agent
    knows still find the user's rows."""
    stored = _Scrubber(policy, hash_key).identity(user_id)
    return [user_id] if stored in (None, user_id) else [user_id, stored]


def scrub_text(policy: Policy, value: str, hash_key: bytes | None = None) -> str:
    """Free text (a title, a URL) under the policy's redactions."""
    return _Scrubber(policy, hash_key).text(value) or value


def scrub_identity(policy: Policy, value: str | None, hash_key: bytes | None = None) -> str | None:
    return _Scrubber(policy, hash_key).identity(value)
