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


def actions_payload(row: StreamRow) -> dict[str, object]:
    """The ``actions`` object the SDK's ``ActionsPayload.from_dict`` reads, for one event.

    ``forwarded_at`` is the event's receive time rather than the moment of sending, so a frame
    is byte-identical whether it is delivered live or replayed, and unique per session (the
    receiver hands out strictly increasing receive times). ``position`` is extra: the SDK
    ignores it, browser clients can resume with it.
    """
    action = {
        "index": row.session_index,
        "type": row.action_type,
        "title": row.title,
        "description": row.description,
        "timestamp_start": row.occurred_at,
        # One action per frame, so it ends where it starts (the SDK's rule for a batch's last).
        "timestamp_end": row.occurred_at,
        "raw_url": row.current_url or "",
        "canonical_url": row.canonical_url or "",
        "session_id": row.session_id,
        "user_id": row.distinct_id,
        "email": row.email,
        "conversation_id": row.conversation_id,
    }
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


def encode_data(row: StreamRow) -> bytes:
    """``data: {...}\\n`` for one event — encoded once, shared by every subscriber."""
    return b"data: " + orjson.dumps(actions_payload(row)) + b"\n"


def frame(data_line: bytes, position: int | None) -> bytes:
    """A complete frame; ``position`` becomes the ``id:`` line in resumable modes only."""
    if position is None:
        return data_line + b"\n"
    return b"id: %d\n" % position + data_line + b"\n"
