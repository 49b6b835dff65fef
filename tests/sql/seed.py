"""A small, fixed story of sessions for the SQL surface tests, written through store.append.

Days are UTC days counted back from today (``day=2`` is the day before yesterday); each event
is received at ``01:00 + sec`` seconds on its day, so every day lands in its own partition.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import asyncpg

from receiver.ingest import normalize
from receiver.storage import store

HOST = "https://app.acme.test"


@dataclass(frozen=True)
class Ev:
    session: str
    user: str
    day: int
    sec: float
    kind: str  # pageview | click | submit | rageclick | identify
    path: str
    text: str | None = None
    product: str = "acme"

    @property
    def email(self) -> str | None:
        return None if self.user.startswith("anon-") else f"{self.user}@acme.test"


STORY: tuple[Ev, ...] = (
    # s1 alice: arrives anonymously, identifies, invites someone (Send invite click).
    Ev("s1", "anon-a1", 2, 0, "pageview", "/team?tab=members"),
    Ev("s1", "alice", 2, 5, "identify", "/team"),
    Ev("s1", "alice", 2, 12, "click", "/team", "Invite member"),
    Ev("s1", "alice", 2, 20, "click", "/team/invite", "Send invite"),
    Ev("s1", "alice", 2, 30, "pageview", "/settings"),
    # s2 bob: looks at the team page, goes to settings.
    Ev("s2", "bob", 2, 100, "pageview", "/team"),
    Ev("s2", "bob", 2, 160, "pageview", "/settings"),
    # s3 carol: invites through the form (submit), then lands on the error page.
    Ev("s3", "carol", 1, 0, "pageview", "/team"),
    Ev("s3", "carol", 1, 4, "click", "/team", "Invite member"),
    Ev("s3", "carol", 1, 9, "submit", "/team/invite"),
    Ev("s3", "carol", 1, 15, "pageview", "/error"),
    # s4 dave: saves a project, ends on the error page.
    Ev("s4", "dave", 1, 200, "pageview", "/projects/123"),
    Ev("s4", "dave", 1, 230, "click", "/projects/123", "Save"),
    Ev("s4", "dave", 1, 231, "pageview", "/error"),
    # s5 erin: rage-clicks Export (three clicks and PostHog's $rageclick within a second).
    Ev("s5", "erin", 0, 0, "pageview", "/reports"),
    Ev("s5", "erin", 0, 10.0, "click", "/reports", "Export"),
    Ev("s5", "erin", 0, 10.3, "click", "/reports", "Export"),
    Ev("s5", "erin", 0, 10.6, "click", "/reports", "Export"),
    Ev("s5", "erin", 0, 10.8, "rageclick", "/reports", "Export"),
    Ev("s5", "erin", 0, 30, "click", "/reports", "Filters"),
    # s6 alice again: clicks Invite member twice, never sends.
    Ev("s6", "alice", 0, 100, "pageview", "/team"),
    Ev("s6", "alice", 0, 103, "click", "/team", "Invite member"),
    Ev("s6", "alice", 0, 107, "click", "/team", "Invite member"),
    # Another product: the same distinct_id, which queries for acme must not see.
    Ev("o1", "alice", 1, 50, "pageview", "/team", product="other"),
    Ev("o1", "alice", 1, 55, "click", "/team", "Invite member", product="other"),
)


def at(day: int, sec: float, today: date) -> datetime:
    d = today - timedelta(days=day)
    return datetime(d.year, d.month, d.day, 1, tzinfo=UTC) + timedelta(seconds=sec)


def payload(ev: Ev, when: datetime) -> dict[str, object]:
    body: dict[str, object] = {
        "uuid": str(uuid.uuid4()),
        "timestamp": when.isoformat(),
        "session_id": ev.session,
        "distinct_id": ev.user,
        "current_url": HOST + ev.path,
        "referrer": "$direct",
    }
    if ev.email:
        body["email"] = ev.email
    if ev.kind == "pageview":
        body["event"] = "$pageview"
    elif ev.kind == "identify":
        body["event"] = "$identify"
    elif ev.kind == "rageclick":
        body["event"] = "$rageclick"
        body["elements_chain"] = f'button:text="{ev.text}"nth-child="1"nth-of-type="1"'
    elif ev.kind == "submit":
        body["event"] = "$autocapture"
        body["event_type"] = "submit"
        body["elements_chain"] = 'form:attr__id="invite"nth-child="1"nth-of-type="1"'
    else:
        body["event"] = "$autocapture"
        body["event_type"] = "click"
        body["elements_chain"] = f'button:text="{ev.text}"nth-child="1"nth-of-type="1"'
    return body


async def ensure_product(conn: asyncpg.Connection, product_id: str) -> None:
    await conn.execute(
        "INSERT INTO products (product_id, contact_email, capture_token) "
        "VALUES ($1, 'ops@example.com', $2) ON CONFLICT DO NOTHING",
        product_id, "tok-" + product_id,
    )


async def append_events(
    conn: asyncpg.Connection, items: list[tuple[str, datetime, dict[str, object]]]
) -> list[store.Appended]:
    """Append (product, received_at, payload) in order, one per transaction (as the writer)."""
    out = []
    for product_id, received_at, body in items:
        event = normalize.from_webhook(body, received_at=received_at)
        out += await store.append(conn, [store.Pending(product_id, received_at, event)])
    return out


async def seed_story(url: str, today: date | None = None) -> date:
    today = today or datetime.now(UTC).date()
    conn = await asyncpg.connect(store.asyncpg_dsn(url))
    await store._init_connection(conn)
    try:
        for product in sorted({e.product for e in STORY}):
            await ensure_product(conn, product)
        ordered = sorted(STORY, key=lambda e: (-e.day, e.sec))
        await append_events(
            conn, [(e.product, at(e.day, e.sec, today), payload(e, at(e.day, e.sec, today))) for e in ordered]
        )
        await conn.execute("ANALYZE events")
    finally:
        await conn.close()
    return today


async def connect(url: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(store.asyncpg_dsn(url))
    await store._init_connection(conn)
    return conn


async def add(
    conn: asyncpg.Connection, product: str, when: datetime, *, user: str = "u1",
    session: str = "s", kind: str = "pageview", path: str = "/home", text: str | None = None,
) -> store.Appended:
    """One event for ``product`` received at ``when`` (the product is created if needed)."""
    await ensure_product(conn, product)
    ev = Ev(session, user, 0, 0, kind, path, text, product)
    (out,) = await append_events(conn, [(product, when, payload(ev, when))])
    return out
