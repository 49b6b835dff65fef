"""The SSE wire format, as pure functions over bytes (no sockets here; see ``stream``).

Payload frames are data-only (``data: <compact JSON object>\\n\\n``): a browser
``EventSource.onmessage`` misses named events, and the stock SDK routes by the JSON ``type``.
Frames carry an ``id:`` line only when the subscriber asked to resume (``since``,
``Last-Event-ID``, ``replay``): httpx-sse never forgets the last id it saw, so on the default
live stream an ``id:`` would turn later blank lines into empty events that the SDK logs as
errors. Heartbeats are always the named ``event: heartbeat`` with empty data, never comments,
so they stay safe after an ``id:``.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

HEARTBEAT = b"event: heartbeat\ndata:\n\n"


@dataclass(frozen=True, slots=True)
class StreamRow:
    """The columns of one stored event that a stream frame needs."""

    product_id: str
    position: int
    received_at: float  # Unix seconds; doubles as the frame's forwarded_at
    occurred_at: float  # Unix seconds
    action_type: str
    session_id: str | None
    distinct_id: str | None
    email: str | None
    title: str
    description: str
    current_url: str | None
    canonical_url: str | None
    session_index: int
    # Set once the session is linked to a chat conversation (POST /sessions/link), from the
    # first event stored after the link on.
    conversation_id: str | None = None


def slim_action(row: StreamRow, timestamp_end: float | None = None) -> dict[str, object]:
    """One event as the SDK's ``SlimAction``: the shape of stream frames and of live activity.

    ``timestamp_end`` is the next action's start (the SDK's rule; dwell = end - start); the last
    action of a list, and the one action of a frame, ends where it starts.
    """
    return {
        "index": row.session_index,
        "type": row.action_type,
        "title": row.title,
        "description": row.description,
        "timestamp_start": row.occurred_at,
        "timestamp_end": row.occurred_at if timestamp_end is None else timestamp_end,
        "raw_url": row.current_url or "",
        "canonical_url": row.canonical_url or "",
        "session_id": row.session_id,
        "user_id": row.distinct_id,
        "email": row.email,
        "conversation_id": row.conversation_id,
    }


def slim_actions(rows: list[StreamRow]) -> list[dict[str, object]]:
    """Several events, oldest first, each ending where the next one of its session starts."""
    out = []
    for i, row in enumerate(rows):
        following = rows[i + 1] if i + 1 < len(rows) else None
        end = None
        if (
            following is not None
            and following.session_id == row.session_id
            and following.occurred_at >= row.occurred_at
        ):
            end = following.occurred_at
        out.append(slim_action(row, end))
    return out


def actions_payload(row: StreamRow) -> dict[str, object]:
    """The ``actions`` object the SDK's ``ActionsPayload.from_dict`` reads, for one event.

    ``forwarded_at`` is the event's receive time rather than the moment of sending, so a frame
    is byte-identical whether it is delivered live or replayed, and unique per session (the
    receiver hands out strictly increasing receive times). ``position`` is extra: the SDK
    ignores it, browser clients can resume with it.
    """
    action = slim_action(row)
    return {
        "type": "actions",
        "product_id": row.product_id,
        "session_id": row.session_id,
        "user_id": row.distinct_id,
        "email": row.email,
        "actions": [action],
        "count": 1,
        "forwarded_at": row.received_at,
        "conversation_id": row.conversation_id,
        "position": row.position,
    }


# JSON leaves U+0085, U+2028 and U+2029 raw, but httpx-sse 0.4.0 (the oldest the SDK allows)
# splits lines with str.splitlines(), which breaks a frame at each of them. Written as \\u
# escapes inside the JSON strings (the only place they can occur) they parse back identically.
_LINE_BREAKS = ((b"\xc2\x85", b"\\u0085"), (b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"))


def sse_safe_json(value: object) -> bytes:
    """Compact JSON with no byte sequence any SSE line splitter treats as a line break."""
    data = orjson.dumps(value)
    # Their UTF-8 forms cannot occur inside other characters: 0xC2 and 0xE2 only lead.
    if b"\xc2\x85" in data or b"\xe2\x80" in data:
        for raw, escaped in _LINE_BREAKS:
            data = data.replace(raw, escaped)
    return data


def encode_data(row: StreamRow) -> bytes:
    """``data: {...}\\n`` for one event — encoded once, shared by every subscriber."""
    return b"data: " + sse_safe_json(actions_payload(row)) + b"\n"


def frame(data_line: bytes, position: int | None) -> bytes:
    """A complete frame; ``position`` becomes the ``id:`` line in resumable modes only."""
    if position is None:
        return data_line + b"\n"
    return b"id: %d\n" % position + data_line + b"\n"
