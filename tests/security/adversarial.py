"""The adversarial corpus: hostile requests anyone with the public capture token (or a webhook
secret) can send, each within the documented limits, and what the receiver must answer.

Issue 14's findings, reproduced, and more of their kind:

* CPU: the e-mail pattern that backtracked on ``a%40aa.a1``, ``";" * 65536`` element chains,
  long URL paths, card-like digit runs, tens of thousands of short addresses;
* memory: millions of ``{}`` in a small gzip body, gzip bombs, deep nesting, long keys;
* bodies that are only almost valid: unterminated escapes, near-base64.

Every request is at most ``RECEIVER_MAX_BODY_BYTES`` on the wire. ``expect`` is the set of
acceptable statuses; ``cap`` names the setting whose budget must refuse it (the 413's detail
says so), when one must. ``tests/security/test_budgets.py`` runs the corpus; ``make bench``
measures CPU and peak memory per request over it (``bench/adversarial.py``).
"""

from __future__ import annotations

import gzip
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from receiver.ingest import budget
from receiver.settings import MIB, Settings

DEFAULTS = Settings()
MAX_BODY = DEFAULTS.max_body_bytes  # RECEIVER_MAX_BODY_BYTES
MAX_DECODED = DEFAULTS.max_decompressed_bytes  # RECEIVER_MAX_DECOMPRESSED_BYTES
MAX_STRING = budget.MAX_STRING_CHARS


@dataclass(frozen=True)
class Hostile:
    name: str
    route: str  # "capture" (POST /e/ with the capture token) or "webhook" (with the secret)
    body: bytes
    expect: frozenset[int]
    cap: str | None = None  # the RECEIVER_* setting named in the 413, when a cap must refuse it
    content_type: str = "text/plain"
    headers: dict[str, str] = field(default_factory=dict)
    finding: str = ""

    @property
    def decoded_size(self) -> int:
        if self.body[:2] == b"\x1f\x8b":
            try:
                return len(gzip.decompress(self.body))
            except (OSError, EOFError):
                return len(self.body)
        return len(self.body)


def _uuid(name: str, i: int, salt: str = "") -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"adversarial/{salt}/{name}/{i}"))


def _event(name: str, i: int, salt: str = "", **props: Any) -> dict[str, Any]:
    """A posthog-js ``$autocapture`` click, as 1.449.2 sends it, plus ``props``."""
    return {
        "uuid": _uuid(name, i, salt),
        "event": "$autocapture",
        "timestamp": "2026-12-04T10:00:00.000Z",
        "properties": {
            "distinct_id": f"user-{i}",
            "$session_id": f"sess-{i % 8}",
            "$current_url": "https://app.example.com/team/42/settings",
            "$event_type": "click",
            "$el_text": "Invite member",
            "$elements_chain": 'button.btn:text="Invite member"nth-child="1";body:nth-child="1"',
            "email": "fixture@example.com",
            **props,
        },
    }


def batch(token: str, events: list[Any]) -> bytes:
    return orjson.dumps({"api_key": token, "batch": events, "sent_at": "2026-12-04T10:00:00.000Z"})


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def repeat(unit: str, chars: int) -> str:
    return (unit * (chars // len(unit) + 1))[:chars]


def normal_event_body(token: str, salt: str = "") -> bytes:
    """The baseline: one real posthog-js autocapture request (gzip, text/plain)."""
    return gz(batch(token, [_event("normal", 0, salt)]))


def corpus(token: str, salt: str = "") -> list[Hostile]:
    """Every hostile request, built for a product whose capture token is ``token``; ``salt``
    changes every event uuid (so repeating a request stores it again, not a duplicate)."""
    items: list[Hostile] = []

    def event(name: str, i: int, **props: Any) -> dict[str, Any]:
        return _event(name, i, salt, **props)

    def _u(name: str, i: int) -> str:
        return _uuid(name, i, salt)

    def capture(name: str, events: list[Any], expect: set[int], cap: str | None = None,
                finding: str = "", raw: bytes | None = None) -> None:
        body = gz(raw if raw is not None else batch(token, events))
        assert len(body) <= MAX_BODY, (name, len(body))
        items.append(Hostile(name, "capture", body, frozenset(expect), cap, finding=finding))

    def webhook(name: str, payload: bytes, expect: set[int], cap: str | None = None,
                finding: str = "") -> None:
        assert len(payload) <= MAX_BODY, (name, len(payload))
        items.append(Hostile(name, "webhook", payload, frozenset(expect), cap,
                             content_type="application/json", finding=finding))

    # ---- finding 1: CPU per request --------------------------------------------------------
    # The original: a 20 KB gzip body of "a%40aa.a1" (37 s of CPU): now over the decoded cap.
    capture("email-redos-20kb-gzip", [event("e20", 0, x=repeat("a%40aa.a1", 16 * MIB))],
            {413}, "RECEIVER_MAX_DECOMPRESSED_BYTES", "1: e-mail regex, 64 steps/char")
    # The same text filling a request: the longest strings an event may hold, as many as fit.
    # Strings as long as allowed, as many as fit in one request.
    fill = -(-(MAX_DECODED - 4096) // MAX_STRING)
    longest = (MAX_DECODED - 4096) // fill
    capture("email-redos-at-cap",
            [event("emax", 0, **{f"x{k}": repeat("a%40aa.a1", longest) for k in range(fill)})],
            {200}, finding="1: e-mail regex")
    webhook("email-redos-webhook",
            orjson.dumps({"event": "$pageview", "uuid": _u("ewh", 0), "distinct_id": "u",
                          **{f"x{k}": repeat("a%40aa.a1", longest) for k in range(fill)}}),
            {200}, finding="1: e-mail regex, one authenticated webhook")
    capture("email-redos-string-over-cap", [event("eover", 0, x=repeat("a%40aa.a1", MAX_STRING + 1))],
            {413}, "RECEIVER_MAX_STRING_CHARS", "1")
    # 159 events with ";" * 65536 (14.6 s): over the decoded cap; the largest batch under it.
    semis = ";" * 65536
    capture("elements-semicolons-159", [event("s159", i, **{"$elements_chain": semis}) for i in range(159)],
            {413}, "RECEIVER_MAX_DECOMPRESSED_BYTES", "1: malformed elements did not count")
    capture("elements-semicolons-under-cap",
            [event("s", i, **{"$elements_chain": semis}) for i in range(MAX_DECODED // 66_000)],
            {200}, finding="1: malformed elements did not count")
    capture("url-path-segments",
            [event("url", i, **{"$current_url": "https://a.example/" + repeat("1a/", 8000)})
             for i in range(MAX_DECODED // 8400)],
            {200}, finding="1: class (per-segment work on 8 KB URLs)")
    capture("card-like-digits",
            [event("card", 0, **{f"x{k}": repeat("4111111111111111 ", longest) for k in range(fill)})],
            {200}, finding="1: class (Luhn check per match)")
    capture("cards-and-addresses",
            [event("mix", 0, **{f"x{k}": repeat("a@b.co 4111111111111111 ", longest)
                                for k in range(fill)})],
            {200}, finding="1: class (both scanners on every character)")
    # As many short addresses as the request's value budget allows, each one scanned.
    events = -(-budget.MAX_REQUEST_NODES // (budget.MAX_EVENT_NODES - 100))
    per_event = (budget.MAX_REQUEST_NODES - 100 * events) // events
    capture("short-addresses-at-cap",
            [event("addr", i, x=[f"u{j}@example.com" for j in range(per_event - 40)])
             for i in range(events)],
            {200}, finding="1: class (a scan per string)")
    capture("short-addresses-object-at-cap",
            [event("addr3", i, x={f"k{j}@example.com": f"u{j}@example.com"
                                   for j in range(per_event // 2 - 40)})
             for i in range(events)],
            {200}, finding="1: class (keys are scanned too)")
    capture("short-addresses-over-cap",
            [event("addr2", i, x=[f"{j}@b.co" for j in range(per_event)])
             for i in range(events + 1)],
            {413}, "RECEIVER_MAX_REQUEST_NODES", "1: class (a scan per string)")
    most = budget.MAX_EVENTS_PER_REQUEST
    capture("events-at-cap", [{"event": "e", "uuid": _u("cap", i)} for i in range(most)],
            {200}, finding="1: events per request")
    capture("events-over-cap",
            [{"event": "e", "uuid": _u("over", i)} for i in range(budget.MAX_EVENTS_PER_REQUEST + 1)],
            {413}, "RECEIVER_MAX_EVENTS_PER_REQUEST", "1: events per request")
    capture("event-values-over-cap", [event("vals", 0, x=list(range(budget.MAX_EVENT_NODES)))],
            {413}, "RECEIVER_MAX_EVENT_NODES", "1/2: values per event")
    capture("event-keys-near-cap",
            [event("keys", 0, x={f"k{j}": j for j in range(budget.MAX_EVENT_NODES // 2 - 100)})],
            {200}, finding="1/2: values per event")

    # ---- finding 2: memory per request -----------------------------------------------------
    # The original: a 10 KB gzip body of 3.5 million {} (163 -> 862 MiB): over the decoded cap.
    empties = b"[" + b"{}," * 3_500_000 + b"{}]"
    capture("empty-dicts-10kb-gzip", [], {413}, "RECEIVER_MAX_DECOMPRESSED_BYTES",
            "2: 3.5 million {}", raw=b'{"api_key":"' + token.encode() + b'","batch":[{"event":"x","p":'
            + empties + b"}]}")
    # As many {} as the decoded cap allows: counted before parsing, refused before any copy.
    n = (MAX_DECODED - 200) // 3
    capture("empty-dicts-decoded-cap", [], {413}, "RECEIVER_MAX_REQUEST_NODES", "2: counted before parsing",
            raw=b'{"api_key":"' + token.encode() + b'","batch":[{"event":"x","p":[' + b"{}," * n + b"{}]}]}")
    webhook("empty-dicts-webhook",
            b'{"event":"x","p":[' + b"{}," * ((MAX_BODY - 100) // 3) + b"{}]}",
            {413}, "RECEIVER_MAX_REQUEST_NODES", "2: the webhook counts before parsing too")
    capture("gzip-bomb-64mib", [], {413}, "RECEIVER_MAX_DECOMPRESSED_BYTES", "2: zip bomb",
            raw=b"\0" * (64 * MIB))
    for depth in (100, 10_000):
        capture(f"nesting-{depth}", [], {400}, finding="2: depth",
                raw=b'{"api_key":"' + token.encode() + b'","batch":[{"event":"x","p":'
                + b"[" * depth + b"]" * depth + b"}]}")
    capture("long-key", [event("lk", 0, **{"k" * (MAX_STRING + 1): 1})], {413},
            "RECEIVER_MAX_STRING_CHARS", "2: string length (keys too)")

    # ---- almost valid ----------------------------------------------------------------------
    capture("unterminated-escapes", [], {400}, finding="the value count is linear on it too",
            raw=b'{"api_key":"' + token.encode() + b'","batch":[{"event":"'
            + b'\\"' * (MAX_DECODED // 2 - 100))
    items.append(Hostile("near-base64", "capture", (b"QUFB" * (MAX_BODY // 4 - 1)) + b"QU!=",
                         frozenset({400}), finding="base64 check: no repeat stack"))
    return items
