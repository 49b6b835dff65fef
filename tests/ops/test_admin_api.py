"""The admin page's endpoints: authentication, counters, ingest rate, stream tickets."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from receiver.ops import admin
from tests.privacy.helpers import read_stream

TOKEN = "admin-token-for-tests-0123456789"


def click(n: int = 0) -> dict[str, Any]:
    return {
        "event": "$autocapture", "event_type": "click", "uuid": str(uuid.uuid4()),
        "distinct_id": "u-1", "session_id": "s-1", "current_url": f"https://app.example.com/p{n}",
        "elements_chain": f'button:text="Button {n}"',
    }


def register(base: str, pid: str) -> dict[str, Any]:
    r = httpx.post(f"{base}/products", json={"product_id": pid, "contact_email": "o@example.com"},
                   headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture
def locked(receiver_factory: Callable[..., Any]) -> Any:
    """A receiver whose admin API needs the token even from loopback."""
    return receiver_factory(admin_token=TOKEN, admin_allow_loopback=False)


def test_page_is_served_openly_with_a_strict_csp(locked: Any) -> None:
    base = locked.base_url
    r = httpx.get(f"{base}/admin")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert "<script" in r.text and "https://" not in r.text  # no CDN
    for name, kind in (("app.js", "text/javascript"), ("admin.css", "text/css")):
        r = httpx.get(f"{base}/admin/static/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
        assert "http://" not in r.text and "https://" not in r.text
    for bad in ("../admin.py", "..%2Fadmin.py", "nope.js", "index.htm"):
        assert httpx.get(f"{base}/admin/static/{bad}").status_code == 404, bad


def test_every_data_call_needs_the_token(locked: Any) -> None:
    base = locked.base_url
    register(base, "a1")
    for method, path in (
        ("GET", "/admin/api/products"),
        ("GET", "/admin/api/rate"),
        ("POST", "/admin/api/stream-ticket/a1"),
        ("GET", "/admin/api/stream/a1?since=0"),
    ):
        assert httpx.request(method, base + path).status_code == 401, path
        r = httpx.request(method, base + path, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401, path
    r = httpx.get(f"{base}/admin/api/products", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200


def test_loopback_fallback_without_a_token(receiver_factory: Callable[..., Any]) -> None:
    open_ = receiver_factory()  # no token, loopback allowed (the default)
    assert httpx.get(f"{open_.base_url}/admin/api/products").status_code == 200
    closed = receiver_factory(admin_allow_loopback=False)
    assert httpx.get(f"{closed.base_url}/admin/api/products").status_code == 403
    # A proxy in front makes every caller look local: forwarded requests are not trusted.
    r = httpx.get(f"{open_.base_url}/admin/api/products", headers={"X-Forwarded-For": "203.0.113.1"})
    assert r.status_code == 403


def test_counters_rate_and_tail(locked: Any) -> None:
    base = locked.base_url
    auth = {"Authorization": f"Bearer {TOKEN}"}
    a = register(base, "busy")
    register(base, "idle")
    for i in range(3):
        hook = {"x-posthog-secret": a["webhook_secret"]}
        r = httpx.post(f"{base}/webhook/busy", json=click(i), headers=hook)
        assert r.status_code == 200

    async def scenario() -> tuple[dict[str, Any], bytes, bytes]:
        ticket = httpx.post(f"{base}/admin/api/stream-ticket/busy", headers=auth).json()["ticket"]
        started = asyncio.Event()
        tail = asyncio.create_task(
            read_stream(f"{base}/admin/api/stream/busy?ticket={ticket}&since=1", frames=3, started=started)
        )
        await asyncio.wait_for(started.wait(), 10)
        listing = (await asyncio.to_thread(httpx.get, f"{base}/admin/api/products", headers=auth)).json()
        r = await asyncio.to_thread(
            httpx.post, f"{base}/webhook/busy", json=click(3),
            headers={"x-posthog-secret": a["webhook_secret"]},
        )
        assert r.status_code == 200
        admin_bytes = await tail
        sdk_bytes = await read_stream(
            f"{base}/stream/busy?since=1", headers={"Authorization": f"Bearer {a['unkey_key']}"}, frames=3
        )
        return listing, admin_bytes, sdk_bytes

    listing, admin_bytes, sdk_bytes = asyncio.run(scenario())
    rows = {p["product_id"]: p for p in listing["products"]}
    busy, idle = rows["busy"], rows["idle"]
    assert busy["events_total"] == 3 and busy["last_position"] == 3
    assert busy["events_last_5m"] == 3 and busy["last_event_at"] is not None
    assert busy["subscribers"] == 1  # the tail itself
    assert busy["privacy_policy"]["email"] == "keep"
    assert idle["events_total"] == 0 and idle["last_event_at"] is None and idle["subscribers"] == 0
    # The same generator as the SDK's stream: byte-identical frames.
    assert admin_bytes.split(b"\n\n", 1)[1] == sdk_bytes.split(b"\n\n", 1)[1]
    assert b"id: 4\n" in admin_bytes and b"Button 3" in admin_bytes

    # The server reads its clock somewhere between these two readings: the last point is the
    # 5-second bucket of that instant (the answer may land in the next bucket).
    asked_at = time.time()
    r = httpx.get(f"{base}/admin/api/rate", params={"window": 60, "step": 5}, headers=auth).json()
    answered_at = time.time()
    assert len(r["points"]) == 12 and r["total"] == 4 and r["step"] == 5
    assert sum(p["events"] for p in r["points"]) == 4
    assert r["points"][-1]["t"] <= answered_at and asked_at < r["points"][-1]["t"] + 5
    r = httpx.get(f"{base}/admin/api/rate", params={"product_id": "idle"}, headers=auth).json()
    assert r["total"] == 0 and len(r["points"]) == 60
    r = httpx.get(f"{base}/admin/api/rate", params={"window": 3600, "step": 1}, headers=auth)
    assert r.status_code == 400


def test_stream_tickets_are_scoped_and_short_lived(locked: Any) -> None:
    base = locked.base_url
    register(base, "t1")
    register(base, "t2")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = httpx.post(f"{base}/admin/api/stream-ticket/t1", headers=auth)
    assert r.status_code == 200 and r.json()["expires_in"] == admin.TICKET_SECONDS
    ticket = r.json()["ticket"]
    assert httpx.post(f"{base}/admin/api/stream-ticket/nope", headers=auth).status_code == 404

    def opens(pid: str, t: str) -> int:
        with httpx.stream("GET", f"{base}/admin/api/stream/{pid}", params={"ticket": t}) as s:
            return s.status_code

    assert opens("t1", ticket) == 200
    assert opens("t2", ticket) == 401  # another product
    expired = admin.issue_ticket(locked.runtime, "t1", now=time.time() - admin.TICKET_SECONDS - 5)
    assert opens("t1", expired) == 401
    assert opens("t1", ticket[:-1] + ("0" if ticket[-1] != "0" else "1")) == 401
    assert opens("t1", "garbage") == 401
    # The SDK's stream does not take tickets.
    with httpx.stream("GET", f"{base}/stream/t1", params={"ticket": ticket}) as s:
        assert s.status_code == 401
