"""GET /users/{product_id}/{user_id}/live-activity against a live receiver and real Postgres."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from receiver.ingest import normalize
from receiver.storage import store
from receiver.storage.store import Pending
from tests.pull.helpers import amplitude, hog, posthog_batch_element, register_project

APP = "https://app.example.com"


def test_ingested_events_come_back_oldest_first_in_the_stream_shape(receiver: Any) -> None:
    p = register_project(receiver.base_url)
    user, session = "user-" + uuid.uuid4().hex[:6], str(uuid.uuid4())
    t0 = time.time() - 60
    assert p.post(hog("$pageview", user=user, session=session, url=f"{APP}/projects/8821034?tab=x",
                      ts=t0)).status_code == 200
    r = p.post({"batch": [
        posthog_batch_element(user=user, session=session, url=f"{APP}/projects/8821034",
                              text=f"Export {i}", ts=t0 + 1 + i)
        for i in range(3)
    ]})
    assert r.status_code == 200 and r.json()["stored"] == 3
    amp = amplitude("$autocapture", user=user, session=-1, device="dev-9",
                    url=f"{APP}/billing/0193f0c2-7d1e-7a44-9c1b-5f2e8a9d0b11", text="Upgrade plan",
                    ts_ms=int((t0 + 10) * 1000))
    assert p.post({"events": [amp]}, bearer=True).status_code == 200

    r = p.live(user)
    assert r.status_code == 200, r.text
    body = r.json()
    actions = body["actions"]
    assert [a["type"] for a in actions] == ["pageview", "click", "click", "click", "click"]
    assert [a["title"] for a in actions] == [
        "Page Load: Projects", "Click Export 0 button", "Click Export 1 button", "Click Export 2 button",
        "Click Upgrade plan button",
    ]
    # Oldest first, ids collapsed, query strings gone from the canonical URL.
    assert [a["timestamp_start"] for a in actions] == sorted(a["timestamp_start"] for a in actions)
    assert actions[0]["canonical_url"] == f"{APP}/projects/:id"
    assert actions[0]["raw_url"] == f"{APP}/projects/8821034?tab=x"
    assert actions[-1]["canonical_url"] == f"{APP}/billing/:id"
    # Amplitude's "no session yet" (-1) falls back to the device id.
    assert actions[-1]["session_id"] == "dev-9" and actions[0]["session_id"] == session
    assert actions[-1]["email"] == f"{user}@example.com"
    # Each action ends where the next one of its session starts; the last one where it started.
    assert actions[0]["timestamp_end"] == actions[1]["timestamp_start"]
    assert actions[3]["timestamp_end"] == actions[3]["timestamp_start"]  # next is another session
    assert actions[-1]["timestamp_end"] == actions[-1]["timestamp_start"]
    # Exactly the stream's SlimAction keys.
    assert set(actions[0]) == {
        "index", "type", "title", "description", "timestamp_start", "timestamp_end", "raw_url",
        "canonical_url", "session_id", "user_id", "email", "conversation_id",
    }
    assert body["product_id"] == p.product_id and body["user_id"] == user
    assert r.headers["cache-control"] == "no-store"


def test_unknown_user_is_an_empty_200(receiver: Any) -> None:
    p = register_project(receiver.base_url)
    r = p.live("nobody-" + uuid.uuid4().hex)
    assert r.status_code == 200
    assert r.json()["actions"] == []


def test_keys_are_checked_both_ways_and_nothing_leaks(receiver: Any) -> None:
    a = register_project(receiver.base_url)
    b = register_project(receiver.base_url, "amplitude")
    for p, secret_user in ((a, "alice"), (b, "bob")):
        assert p.post(hog("$pageview", user=secret_user, session="s", url=f"{APP}/x")).status_code == 200

    assert [x["user_id"] for x in a.live("alice").json()["actions"]] == ["alice"]
    assert [x["user_id"] for x in b.live("bob").json()["actions"]] == ["bob"]
    # Another product's key on this product: 403, both ways, whatever the user.
    for owner, other in ((a, b), (b, a)):
        for user in ("alice", "bob", "nobody"):
            r = owner.live(user, key=other.mcp_key)
            assert r.status_code == 403, r.text
            assert "actions" not in r.json()
    # Under its own path, a product only ever sees its own users.
    assert a.live("bob").json()["actions"] == [] and b.live("alice").json()["actions"] == []
    # A key for a product id that does not exist: 403 too (existence is not revealed).
    assert a.live("alice", product_id="prod_doesnotexist").status_code == 403
    # Wrong, missing or non-Bearer keys: 401, nothing else.
    for key in ("rmk_wrong", a.ingest_secret, b.body["credentials"]["stream_key"], ""):
        r = a.live("alice", key=key)
        assert r.status_code == 401 and r.json()["code"] == "unauthorized", (key, r.text)
    r = httpx.get(f"{receiver.base_url}/users/{a.product_id}/alice/live-activity",
                  headers={"Authorization": f"Basic {a.mcp_key}"}, timeout=10)
    assert r.status_code == 401


def test_bad_arguments_are_clear_400s_never_5xx(receiver: Any) -> None:
    p = register_project(receiver.base_url)
    cases = [
        ({"limit": "0"}, "limit must be an integer between 1 and 100"),
        ({"limit": "101"}, "limit must be an integer between 1 and 100"),
        ({"limit": str(10**30)}, "limit must be an integer between 1 and 100"),
        ({"limit": "ten"}, "limit must be an integer between 1 and 100"),
        ({"limit": "-5"}, "limit must be an integer between 1 and 100"),
        ({"since_seconds": "0"}, "since_seconds must be an integer between 1 and 1800"),
        ({"since_seconds": "86400"}, "since_seconds must be an integer between 1 and 1800"),
    ]
    for params, detail in cases:
        r = p.live("u1", **params)
        assert r.status_code == 400, (params, r.text)
        assert r.json() == {"detail": detail, "code": "bad_request"}
    for user_id in ("%01bad", "x" * 201, "%20"):
        r = p.live(user_id)
        assert r.status_code == 400, (user_id, r.text)
        assert "user_id" in r.json()["detail"]


def test_limit_and_window_bound_what_is_returned(receiver: Any, database_url: str) -> None:
    p = register_project(receiver.base_url)
    user, session = "u-limit", str(uuid.uuid4())
    now = time.time()
    r = p.post({"batch": [
        hog("$autocapture", user=user, session=session, url=f"{APP}/a", text=f"B{i}", ts=now - 30 + i)
        for i in range(25)
    ]})
    assert r.status_code == 200 and r.json()["stored"] == 25
    # An action received two hours ago is outside every window.
    asyncio.run(_append_old(database_url, p.product_id, user, hours=2))

    titles = [a["title"] for a in p.live(user).json()["actions"]]
    assert titles == [f"Click B{i} button" for i in range(5, 25)]  # newest 20 (the default), oldest first
    assert [a["title"] for a in p.live(user, limit=3).json()["actions"]] == [
        "Click B22 button", "Click B23 button", "Click B24 button"]
    assert len(p.live(user, limit=100).json()["actions"]) == 25
    assert all("Old" not in a["title"] for a in p.live(user, limit=100).json()["actions"])


async def _append_old(database_url: str, product_id: str, user: str, hours: float) -> None:
    received = datetime.now(UTC) - timedelta(hours=hours)
    event = normalize.from_webhook(
        hog("$autocapture", user=user, session="old", url=f"{APP}/old", text="Old",
            ts=received.timestamp()),
        received_at=received,
    )
    pool = await store.create_pool(database_url, max_size=1, timeout=10)
    try:
        async with pool.acquire() as conn:
            await store.append(conn, [Pending(product_id, received, event)])
    finally:
        await pool.close()


def test_read_rate_is_limited_per_key(receiver_factory: Any) -> None:
    rcv = receiver_factory(read_rate_limit=0.01, read_burst=2)
    a = register_project(rcv.base_url)
    b = register_project(rcv.base_url)
    assert [a.live("u").status_code for _ in range(3)] == [200, 200, 429]
    r = a.live("u")
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert b.live("u").status_code == 200  # another key has its own budget
