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

import functools
import hashlib
import hmac
import ipaddress
import re
import re._parser as sre_parse  # the stdlib's own parser: what re.compile will run
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

# Email addresses, also URL-encoded (alice%40example.com) as they appear in query strings.
#
# Every scanner here runs on attacker-controlled text (anyone with the public capture token can
# send events), so each does work linear in its input with a small constant: a regular
# expression that retried a 64-character local part at every position cost ~64 steps per
# character on "a%40aa.a1" repeated (37 s of CPU for a 20 KB gzipped body). The address is
# therefore matched on the *reversed* text, where it starts at a domain's end: a match may begin
# only at the end of a run of domain characters (the lookbehind), every quantifier but the
# last label's is possessive, so each run is read once and a failed attempt never restarts
# inside it. The local part is then the last 1-64 local characters before the separator, as
# the forward pattern it replaces matched. Reversed pieces: TLD, ".", labels, "@" or "04%"
# (``%40``), local part; a ``%`` starts no local character when it begins ``%40``.
_EMAIL_REVERSED = re.compile(
    # The TLD's last letter first (the engine skips other characters at C speed), then: a
    # domain ends here, or before a single final "." (lookbehinds, fixed widths 2, 3, 2).
    r"[A-Za-z](?:(?<![A-Za-z0-9.\-][A-Za-z])|(?<=[^A-Za-z0-9.\-]\.[A-Za-z])|(?<=\A\.[A-Za-z]))"
    r"[A-Za-z]{1,62}+\."
    r"(?:[A-Za-z0-9\-]{1,63}+\.)*+"
    # Not possessive: in "…elpmaxe04%" the label must give "04" back to the separator.
    r"[A-Za-z0-9\-]{1,63}"
    r"(?:@|04%)"
    r"(?:[A-Za-z0-9._+\-]|(?<!04)%){1,64}+"
)
_EMAIL_MAX = 200  # identity values: local and domain each at most this long (see looks_like_email)
_email_sub = _EMAIL_REVERSED.sub
_REDACTED_REVERSED = REDACTED[::-1]
_SHORTEST_MATCH = len("a@b.cd")  # nothing shorter is an address, and a card is 13 digits
_MEMO_CHARS = 256
# 13-19 digits, single spaces or dashes allowed between them, not part of a longer number.
# ASCII digits (card numbers are printed with them; the Luhn check reads them as such), and
# the pattern starts with a digit so the engine skips everything else at C speed before the
# lookbehind is tried (5x faster on ordinary text than a leading lookbehind).
CARD_RE = re.compile(r"[0-9](?<![0-9][0-9])(?:[ \-]?[0-9]){12,18}(?![0-9])")
_HASHED = re.compile(r"h:[0-9a-f]{64}")
# Three digits with at most single spaces or dashes between them: part of every card number.
_CARD_HINT = re.compile(r"[0-9][ \-]?[0-9][ \-]?[0-9]").search
MAX_LUHN_CHECKS = 64
_SPACE = re.compile(r"\s")

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


# Luhn in C: the digits from the right, every other one doubled (minus 9 past 9), summed
# with bytes.translate + sum instead of a Python loop per digit (a body of card-like numbers
# makes one check per 17 characters).
_LUHN_PLAIN = bytes.maketrans(b"0123456789", bytes(range(10)))
_LUHN_DOUBLED = bytes.maketrans(b"0123456789", bytes((2 * d - 9 if d > 4 else 2 * d) for d in range(10)))


def luhn_ok(digits: str) -> bool:
    b = digits.encode("ascii")[::-1]
    total = sum(b[0::2].translate(_LUHN_PLAIN)) + sum(b[1::2].translate(_LUHN_DOUBLED))
    return total % 10 == 0


def _card(m: re.Match[str]) -> str:
    digits = m.group(0).replace(" ", "").replace("-", "")
    return REDACTED if 13 <= len(digits) <= 19 and luhn_ok(digits) else m.group(0)


def _redact_cards(text: str) -> str:
    # Most text has not even three digits in a row: finding that out is a fast C scan.
    if len(text) < 13 or _CARD_HINT(text) is None:
        return text
    # Each candidate costs a Luhn check in Python. Past MAX_LUHN_CHECKS of them in one string
    # (no analytics property lists that many long numbers; a hostile one lists 30,000) the
    # rest are all redacted, checked or not, by the engine alone: more is hidden, never less.
    pieces: list[str] = []
    pos = 0
    for n, m in enumerate(CARD_RE.finditer(text)):
        if n == MAX_LUHN_CHECKS:
            pieces.append(CARD_RE.sub(REDACTED, text[m.start():]))
            return "".join(pieces)
        pieces.append(text[pos:m.start()])
        pieces.append(_card(m))
        pos = m.end()
    if not pieces:
        return text
    pieces.append(text[pos:])
    return "".join(pieces)


def redact_emails(text: str, repl: str | Callable[[str], str] = REDACTED) -> str:
    """``text`` with every email address replaced by ``repl`` (a string, or a function of the
    address). Linear in ``len(text)``; see ``_EMAIL_REVERSED``."""
    if "@" not in text and "%40" not in text:
        return text
    if isinstance(repl, str):
        return _EMAIL_REVERSED.sub(repl[::-1], text[::-1])[::-1]
    fn = repl
    return _EMAIL_REVERSED.sub(lambda m: fn(m.group(0)[::-1])[::-1], text[::-1])[::-1]


def _redact_emails(text: str) -> str:
    return redact_emails(text)


def looks_like_email(value: str) -> bool:
    """The whole value is one address: 1-200 characters, ``@``, then 1-200 characters with a
    dot that leaves 1-63 after it; no whitespace, no second ``@``. Linear (no regex)."""
    if len(value) > 2 * _EMAIL_MAX + 1 or value.count("@") != 1:
        return False
    local, _, domain = value.partition("@")
    if not (1 <= len(local) <= _EMAIL_MAX and 3 <= len(domain)) or _SPACE.search(value):
        return False
    # Some dot must leave 1-200 characters before it and 1-63 after it.
    lo, hi = max(1, len(domain) - 64), min(_EMAIL_MAX, len(domain) - 2)
    return lo <= hi and domain.find(".", lo, hi + 1) >= 0


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
    def from_json(cls, data: Mapping[str, Any] | None, *, stored: bool = False) -> Policy:
        """Validate a stored or submitted policy; missing keys take their default.

        ``stored``: already in the database. Patterns that may backtrack catastrophically are
        refused when a policy is set, but one stored before that check still loads (refusing
        it would stop the product's ingest).
        """
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
            if not stored:
                _refuse_backtracking(pattern)
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

_REPEATS = (sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT)


def _refuse_backtracking(pattern: str) -> None:
    """Refuse a custom pattern whose matching time can grow exponentially with its input.

    Every pattern runs on every string of every event, which anyone holding the public capture
    token can write. The classic catastrophic shapes are a variable repetition or an
    alternation *inside* a variable repetition (``(a+)+``, ``(a|ab)*``) and backreferences;
    they are refused unless the outer repetition is possessive (``++``, ``*+``) or the inner
    part is an atomic group (``(?>…)``), which never backtrack.
    """

    def walk(items: Any, under_repeat: bool) -> str | None:
        for op, arg in items:
            if op == sre_parse.GROUPREF or op == sre_parse.GROUPREF_EXISTS:
                return "a backreference"
            if op in _REPEATS:
                lo, hi, body = arg
                variable = lo != hi
                if variable and under_repeat:
                    return "a repetition inside a repetition"
                found = walk(body, under_repeat or (variable and hi > 1))
            elif op in (sre_parse.POSSESSIVE_REPEAT, sre_parse.ATOMIC_GROUP):
                found = walk(arg[2] if op == sre_parse.POSSESSIVE_REPEAT else arg, False)
            elif op == sre_parse.BRANCH:
                if under_repeat:
                    return "an alternation inside a repetition"
                found = next((f for b in arg[1] if (f := walk(b, False))), None)
            elif op == sre_parse.SUBPATTERN:
                found = walk(arg[3], under_repeat)
            elif op in (sre_parse.ASSERT, sre_parse.ASSERT_NOT):
                found = walk(arg[1], under_repeat)
            else:
                found = None
            if found:
                return found
        return None

    reason = walk(sre_parse.parse(pattern), False)
    if reason:
        raise PolicyError(
            f"redaction pattern {pattern!r} has {reason}, which can make matching take "
            "exponential time on hostile input; make the outer repetition possessive "
            "(e.g. (?:\\d{3}-)++) or the inner part atomic ((?>...))"
        )


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
_IP_FIRST = frozenset("0123456789abcdefABCDEF:.[ \t\n\r\f\v")


def looks_like_ip(value: str) -> bool:
    if not 2 <= len(value) <= 80 or value[0] not in _IP_FIRST or not _IP_CHARS.fullmatch(value):
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


_PLAIN, _ID, _CHAIN, _URL = range(4)
_URL_PREFIXES = ("http://", "https://", "//")


@functools.lru_cache(maxsize=4096)
def _key_kind(key: str) -> tuple[bool, bool, bool, int]:
    """How a (lower-cased) property key is treated: (an IP key, an email key, an identity key,
    what its strings are). The same few keys recur in every event, so this is cached."""
    kind = _ID if key in ID_KEYS else _CHAIN if key in _CHAIN_KEYS else _URL if _is_url_key(key) else _PLAIN
    return _is_ip_key(key), _is_email_key(key), key in IDENTITY_KEYS, kind


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
        # Nothing a builtin redacts is shorter than "a@b.cd": shorter strings (most keys and
        # values) skip the scans. Custom patterns may match anything, so no shortcut then.
        self.min_chars = 0 if policy._patterns else _SHORTEST_MATCH
        self.cards = "card_number" in policy.builtin_redactions
        self.emails = "email" in policy.builtin_redactions or policy.email != "keep"
        self.builtins_only = not policy._patterns
        # A long string is often stored twice (the payload's $current_url and the current_url
        # column): scan it once per event.
        self._seen: dict[str, str] = {}

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
        if value is None or not looks_like_email(value.strip()):
            return value
        return self.email(value)

    def text(self, value: str | None) -> str | None:
        if not value or len(value) < self.min_chars:
            return value
        if self.builtins_only and len(value) < _MEMO_CHARS:
            # The default policy's two scans, inline: this runs for every string of a payload.
            if self.cards and len(value) >= 13:
                value = _redact_cards(value)
            if self.emails and ("@" in value or "%40" in value):
                value = _email_sub(_REDACTED_REVERSED, value[::-1])[::-1]
            return value
        if len(value) >= _MEMO_CHARS:
            done = self._seen.get(value)
            if done is not None:
                return done
            original = value
            for step in self.steps:
                value = step(value)
            self._seen[original] = value
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

    def path(self, value: str | None, url: str | None, scrubbed_url: str | None) -> str | None:
        """``value``, the path of ``url``, under the policy. When the builtins found nothing in
        the whole URL they find nothing in its path either (a path is delimited by "/" and
        "?", "#" or the end, which neither pattern reads through), so a long one is not read
        twice."""
        if (
            value is not None and len(value) >= _MEMO_CHARS and self.min_chars
            and url is not None and scrubbed_url == url and normalize.pathname(url) == value
        ):
            return value
        return self.url(value)

    def chain(self, value: str) -> str:
        if self.strip:
            value = _CHAIN_HREF.sub(lambda m: m.group(1) + strip_query(m.group(2)) + m.group(3), value)
        return self.text(value) or value

    # ------------------------------------------------------------------ payload

    def _scan_many(self, texts: list[str]) -> list[str]:
        """:meth:`text` of many strings (builtins only), scanned as one string joined by NULs.

        25,000 short strings cost 25,000 scans' worth of calls; joined they are one scan of the
        same characters. NUL is a boundary for both builtin patterns (neither reads through it,
        as through a string's end), and stored strings hold none (budget.py replaced them), so
        splitting gives the strings back one for one.
        """
        if len(texts) < 2:
            return [self.text(t) or t for t in texts]
        joined = "\x00".join(texts)
        if joined.count("\x00") != len(texts) - 1:  # a NUL inside one: one by one
            return [self.text(t) or t for t in texts]
        if self.cards:
            joined = _redact_cards(joined)
        if self.emails:
            joined = redact_emails(joined)
        return joined.split("\x00")

    def _batchable(self, email_key: bool, identity_key: bool, kind: int, value: str) -> bool:
        """A string :meth:`_value` would just scan with :meth:`text`."""
        return (kind == _PLAIN and not (email_key or identity_key)
                and not (self.strip and value.startswith(_URL_PREFIXES)))

    def _plain_list(self, value: list[Any], key: str) -> list[Any]:
        """A list under an ordinary key: its strings scanned together (:meth:`_scan_many`)."""
        items: list[Any] = []
        batch: list[int] = []
        for item in value:
            if isinstance(item, str):
                if 2 <= len(item) <= 80 and item[0] in _IP_FIRST and looks_like_ip(item):
                    continue
                if self.strip and item.startswith(_URL_PREFIXES):
                    items.append(self.url(item))
                    continue
                batch.append(len(items))
                items.append(item)
            elif isinstance(item, dict | list):
                items.append(self._walk(item, key))
            else:
                items.append(item)
        for i, text in zip(batch, self._scan_many([items[i] for i in batch]), strict=True):
            items[i] = text
        return items

    def _object(self, value: dict[str, Any]) -> dict[str, Any]:
        """An object (builtins only): keys scanned together, ordinary string values together."""
        keys: list[str] = []
        values: list[Any] = []
        batch: list[int] = []
        for k, v in value.items():
            lk = k.lower() if isinstance(k, str) else str(k)
            ip_key, email_key, identity_key, kind = _key_kind(lk)
            if ip_key:
                continue
            if isinstance(v, str):
                if self._batchable(email_key, identity_key, kind, v):
                    if 2 <= len(v) <= 80 and v[0] in _IP_FIRST and looks_like_ip(v):
                        continue
                    batch.append(len(values))
                else:
                    cleaned = self._value(email_key, identity_key, kind, v)
                    if cleaned is None:
                        continue
                    v = cleaned
            elif isinstance(v, dict | list):
                v = self._walk(v, lk)
            keys.append(k)
            values.append(v)
        for i, text in zip(batch, self._scan_many([values[i] for i in batch]), strict=True):
            values[i] = text
        # As one key after another would be written: a later duplicate (after redaction) wins.
        return dict(zip(self._scan_many(keys), values, strict=True))

    def payload(self, value: Any) -> Any:
        return self._walk(value, "")

    def _string(self, key: str, value: str) -> str | None:
        """The stored form of one string property (None: drop it)."""
        _ip_key, email_key, identity_key, kind = _key_kind(key)
        return self._value(email_key, identity_key, kind, value)

    def _value(self, email_key: bool, identity_key: bool, kind: int, value: str) -> str | None:
        """:meth:`_string` for a key already classified (once per object key or per list)."""
        if 2 <= len(value) <= 80 and value[0] in _IP_FIRST and looks_like_ip(value):
            return None
        if email_key and "@" in value:
            return self.email(value)
        if identity_key and looks_like_email(value.strip()):
            return self.email(value)
        if kind == _ID:
            return value
        if kind == _CHAIN:
            return self.chain(value)
        if kind == _URL or value.startswith(_URL_PREFIXES):
            return self.url(value)
        return self.text(value)

    def _walk(self, value: Any, key: str) -> Any:
        if isinstance(value, dict) and self.builtins_only:
            return self._object(value)
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            text = self.text
            classify = self._value
            for k, v in value.items():
                lk = k.lower() if isinstance(k, str) else str(k)
                ip_key, email_key, identity_key, kind = _key_kind(lk)
                if ip_key:
                    continue
                if isinstance(v, str):
                    cleaned = classify(email_key, identity_key, kind, v)
                    if cleaned is None:
                        continue
                    v = cleaned
                elif isinstance(v, dict | list):
                    v = self._walk(v, lk)
                out[text(k) or k] = v
            return out
        if isinstance(value, list):
            _ip_key, email_key, identity_key, kind = _key_kind(key)
            if kind == _PLAIN and not (email_key or identity_key) and self.builtins_only:
                return self._plain_list(value, key)
            items = []
            classify = self._value
            walk = self._walk
            for item in value:
                if isinstance(item, str):
                    cleaned = classify(email_key, identity_key, kind, item)
                    if cleaned is not None:
                        items.append(cleaned)
                elif isinstance(item, dict | list):
                    items.append(walk(item, key))
                else:
                    items.append(item)
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
    current_url = s.url(event.current_url)
    return replace(
        event,
        distinct_id=s.identity(event.distinct_id),
        email=s.email(event.email),
        current_url=current_url,
        canonical_url=canonical,
        pathname=s.path(event.pathname, event.current_url, current_url),
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
