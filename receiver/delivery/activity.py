"""What agents read, shaped (pure: no I/O): live activity, sessions, users, as JSON and as text.

The JSON is what the REST route answers and the MCP tools return as structured content; actions
are the SDK's SlimAction (:func:`receiver.delivery.wire.slim_actions`), exactly as stream frames
carry them. The text is what the MCP tools return for a model to read: one numbered line per
action, oldest first, with the page it happened on, and the current page called out last (what
an agent most often needs).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from receiver.delivery.wire import StreamRow, slim_actions

MAX_PAGES_PER_SESSION = 30


def live_body(
    product_id: str, user_id: str, rows: list[StreamRow], *, limit: int, since_seconds: int
) -> dict[str, Any]:
    actions = slim_actions(rows)
    return {
        "product_id": product_id,
        "user_id": user_id,
        "actions": actions,
        "count": len(actions),
        "limit": limit,
        "since_seconds": since_seconds,
    }


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _span(seconds: int) -> str:
    if seconds % 86400 == 0:
        days = seconds // 86400
        return f"{days} day{'s' if days != 1 else ''}"
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return f"{hours} hour{'s' if hours != 1 else ''}"
    if seconds % 60 == 0:
        minutes = seconds // 60
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds} seconds"


def live_text(body: dict[str, Any]) -> str:
    actions = body["actions"]
    span = _span(body["since_seconds"])
    who = f"user {body['user_id']!r}"
    if not actions:
        return (
            f"No activity recorded for {who} in the last {span}. Answer without it: the user may "
            "not have acted recently, or the app identifies them with another id."
        )
    lines = [f"Recent in-app activity of {who}, last {span}, oldest first ({len(actions)} actions):"]
    for i, a in enumerate(actions, 1):
        page = a["canonical_url"] or a["raw_url"] or "unknown page"
        lines.append(f"{i}. {_clock(a['timestamp_start'])} [{a['type']}] {a['description']} ({page})")
    current = actions[-1]["canonical_url"] or actions[-1]["raw_url"]
    if current:
        lines.append(f"Current page (the latest action's): {current}")
    return "\n".join(lines)


@dataclass
class _Session:
    session_id: str | None
    started: float
    ended: float
    actions: int
    pages: list[str]
    last: str


def sessions_of(rows: list[StreamRow], max_sessions: int) -> list[dict[str, Any]]:
    """A user's sessions (newest first): when, how many actions, the pages in visit order."""
    by_id: dict[str | None, _Session] = {}
    order: list[str | None] = []
    for row in rows:  # oldest first
        s = by_id.get(row.session_id)
        if s is None:
            s = by_id[row.session_id] = _Session(
                row.session_id, row.occurred_at, row.occurred_at, 0, [], row.title
            )
            order.append(row.session_id)
        s.started = min(s.started, row.occurred_at)
        s.ended = max(s.ended, row.occurred_at)
        s.actions += 1
        s.last = row.title
        page = _path(row.canonical_url)
        if page and (not s.pages or s.pages[-1] != page) and len(s.pages) < MAX_PAGES_PER_SESSION:
            s.pages.append(page)
    newest = sorted((by_id[k] for k in order), key=lambda s: -s.ended)[:max_sessions]
    return [
        {
            "session_id": s.session_id,
            "started_at": s.started,
            "ended_at": s.ended,
            "actions": s.actions,
            "pages": s.pages,
            "last_action": s.last,
        }
        for s in newest
    ]


def _path(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return urlsplit(url).path or "/"
    except ValueError:
        return None


def sessions_text(user_id: str, sessions: list[dict[str, Any]], days: int) -> str:
    if not sessions:
        return f"No sessions recorded for user {user_id!r} in the last {_span(days * 86400)}."
    lines = [f"Sessions of user {user_id!r}, newest first ({len(sessions)}):"]
    for i, s in enumerate(sessions, 1):
        minutes = max(0, round((s["ended_at"] - s["started_at"]) / 60))
        pages = " → ".join(s["pages"]) or "no page recorded"
        lines.append(
            f"{i}. {_clock(s['started_at'])}, {minutes} min, {s['actions']} actions: {pages}"
            f" (last: {s['last_action']})"
        )
    return "\n".join(lines)


def users_text(users: list[dict[str, Any]], filters: str, hours: int) -> str:
    if not users:
        return f"No user did that ({filters}) in the last {_span(hours * 3600)}."
    lines = [f"Users who did that ({filters}) in the last {_span(hours * 3600)}, most recent first:"]
    for i, u in enumerate(users, 1):
        where = f" on {u['last_page']}" if u["last_page"] else ""
        lines.append(
            f"{i}. {u['user_id']}: {u['matches']} matching actions, last at "
            f"{_clock(u['last_at'])} ({u['last_title']}{where})"
        )
    return "\n".join(lines)
