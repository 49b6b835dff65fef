"""Per-request budgets on decoded JSON: how many values, how deep, how long a string.

Pure functions over bytes and decoded values: no I/O. Two checks, in this order:

:func:`prescan` runs on the decoded bytes *before* they are parsed. ``orjson`` materializes a
whole document at once, and a 1 MiB body of ``[{},{},…]`` becomes 350,000 dictionaries
(≈ 25 MiB) before any walk could stop it; so the number of values is bounded first, from the
bytes, with a cost linear in them and done in C (one regex pass that drops string contents,
then ``bytes.count``). The bound is an over-estimate for documents full of empty containers and
exact for ordinary ones (see :func:`count_nodes`).

:func:`check_event` walks one parsed event once, with an explicit stack (no recursion), and
enforces the per-event caps: values (plus object keys), nesting depth, characters per string
(keys included). The same walk replaces U+0000 — which Postgres text and JSONB cannot hold —
by U+FFFD *in place*, so the event is never copied to be made storable.

Exceeding a size cap is :class:`PayloadTooLargeError` (413: the same request can never
succeed); nesting too deep is :class:`BadRequestError` (400), as it always was.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from receiver.errors import BadRequestError, PayloadTooLargeError

# Defaults, measured against real posthog-js traffic (tests/data/posthog_js_requests, 1.449.2):
# an event is 1-4.5 KB of JSON with 85-251 values and keys, nested 2-3 deep; posthog-js flushes
# its queue every 3 s and rate-limits itself to 10 events/s with a burst of 100, so one request
# carries at most ~150 events (~0.5 MB); posthog-node and posthog-python send at most 100.
# A request is at most 512 KiB of JSON (RECEIVER_MAX_DECOMPRESSED_BYTES), which bounds the
# scanning work too: see docs/security.md for how these fit the CPU budget.
MAX_EVENTS_PER_REQUEST = 500
MAX_REQUEST_NODES = 25_000
MAX_EVENT_NODES = 10_000
MAX_DEPTH = 64
MAX_STRING_CHARS = 256 * 1024  # half a request (RECEIVER_MAX_DECOMPRESSED_BYTES, 512 KiB)

# A JSON string: its contents are skipped as a whole (possessive: no backtracking), so what is
# left is the document's structure. An unterminated string (even one ending in a lone
# backslash) runs to the end: a failed attempt would restart at the next quote, which lies
# inside the same escapes, and read them all again ('"\\"\\"…' was quadratic). Linear: every
# byte is looked at once.
_STRING = re.compile(rb'"[^"\\]*+(?:\\.?[^"\\]*+)*+(?:"|\Z)', re.DOTALL)


@dataclass(frozen=True, slots=True)
class Budget:
    """The caps one request is held to (``RECEIVER_MAX_*`` settings)."""

    max_events: int = MAX_EVENTS_PER_REQUEST
    max_request_nodes: int = MAX_REQUEST_NODES
    max_event_nodes: int = MAX_EVENT_NODES
    max_depth: int = MAX_DEPTH
    max_string_chars: int = MAX_STRING_CHARS


DEFAULT = Budget()


def count_nodes(data: bytes) -> int:
    """An upper bound on the values plus object keys of the JSON document ``data``.

    Every value but the root is the first child of a container or follows a comma, and every
    key is followed by a colon, so once string contents are gone the count is
    ``1 + commas + opening brackets + colons``. It is exact for documents without empty
    containers and at most twice the truth with them: a safe direction for a cap.
    """
    if b'"' in data:
        data = _STRING.sub(b"", data)
    return 1 + data.count(b",") + data.count(b"[") + data.count(b"{") + data.count(b":")


def prescan(data: bytes, budget: Budget = DEFAULT) -> None:
    """Refuse a document with more values than the request may hold, before parsing it."""
    # Every value and key takes at least one byte: a short document cannot be over the cap.
    if len(data) <= budget.max_request_nodes:
        return
    nodes = count_nodes(data)
    if nodes > budget.max_request_nodes:
        raise PayloadTooLargeError(
            f"the request holds about {nodes} JSON values, more than the "
            f"{budget.max_request_nodes} allowed (RECEIVER_MAX_REQUEST_NODES)"
        )


def check_events(count: int, budget: Budget = DEFAULT) -> None:
    if count > budget.max_events:
        raise PayloadTooLargeError(
            f"{count} events in one request, more than the {budget.max_events} allowed "
            "(RECEIVER_MAX_EVENTS_PER_REQUEST)"
        )


def _clean(text: str) -> str:
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _too_long(length: int, budget: Budget) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"a string of {length} characters is longer than the {budget.max_string_chars} "
        "allowed (RECEIVER_MAX_STRING_CHARS)"
    )


def check_event(value: Any, budget: Budget = DEFAULT) -> Any:
    """Enforce the per-event caps on a decoded value and make it storable, in place.

    Returns ``value`` itself (a top-level string is returned cleaned, strings being immutable).
    """
    if isinstance(value, str):
        if len(value) > budget.max_string_chars:
            raise _too_long(len(value), budget)
        return _clean(value)
    if not isinstance(value, dict | list):
        return value
    max_nodes = budget.max_event_nodes
    max_chars = budget.max_string_chars
    max_depth = budget.max_depth
    nodes = 1
    # (container, depth); a container is visited once, its children counted as they are seen.
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(value, 0)]
    while stack:
        container, depth = stack.pop()
        if depth > max_depth:
            raise BadRequestError(f"JSON is nested deeper than {max_depth} levels")
        if isinstance(container, dict):
            nodes += 2 * len(container)
            if nodes > max_nodes:
                break
            renamed: list[str] = []
            for k, v in container.items():
                if len(k) > max_chars:
                    raise _too_long(len(k), budget)
                if "\x00" in k:
                    renamed.append(k)
                if isinstance(v, str):
                    if len(v) > max_chars:
                        raise _too_long(len(v), budget)
                    if "\x00" in v:
                        container[k] = _clean(v)
                elif isinstance(v, dict | list):
                    stack.append((v, depth + 1))
            for k in renamed:
                container[_clean(k)] = container.pop(k)
        else:
            nodes += len(container)
            if nodes > max_nodes:
                break
            for i, v in enumerate(container):
                if isinstance(v, str):
                    if len(v) > max_chars:
                        raise _too_long(len(v), budget)
                    if "\x00" in v:
                        container[i] = _clean(v)
                elif isinstance(v, dict | list):
                    stack.append((v, depth + 1))
    if nodes > max_nodes:
        raise PayloadTooLargeError(
            f"an event holds more than {max_nodes} JSON values (RECEIVER_MAX_EVENT_NODES)"
        )
    return value
