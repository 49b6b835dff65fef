"""A redacted value appears nowhere: no column, no payload, no stream frame, no log line.

A real ``receiver serve`` process (JSON logs at DEBUG) against real Postgres; events arrive by
both routes (webhook: the tutorial's flat body and PostHog's stock template body; capture:
posthog-js's batch) for a product with the strictest policy, while a live stream is open;
then the stream is replayed from position 0.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.privacy.helpers import dump_database, fetch, read_stream

HASH_KEY = "test-installation-key-0123456789abcdef"
EMAIL = "Jane.Doe+vip@Example.org"
CARD = "4111 1111 1111 1111"
CARD_DIGITS = "4111111111111111"
QUERY_TOKEN = "tok_Q9x7SECRETqueryVALUE"
IP = "203.0.113.77"
FORWARDED_IP = "198.51.100.99"
CUSTOM = "ACME-482913"
SECRETS = (EMAIL, EMAIL.lower(), "jane.doe", "example.org", CARD, CARD_DIGITS, "4111-1111",
           QUERY_TOKEN, IP, FORWARDED_IP, CUSTOM)
POLICY = {"email": "hash", "query": "strip", "redact": [r"ACME-\d{6}"]}


def hashed(email: str) -> str:
    return "h:" + hmac.new(HASH_KEY.encode(), email.lower().encode(), hashlib.sha256).hexdigest()


def chain(text: str, href: str) -> str:
    return (
        f'a.btn:attr__href="{href}"href="{href}"nth-child="1"nth-of-type="1"text="{text}";'
        'div.card:attr__class="card"nth-child="2"nth-of-type="1";body:nth-child="2"nth-of-type="1"'
    )


def webhook_flat(session: str) -> dict[str, Any]:
    return {
        "event": "$autocapture",
        "event_type": "click",
        "uuid": str(uuid.uuid4()),
        "session_id": session,
        "distinct_id": EMAIL,
        "email": EMAIL,
        "timestamp": "2026-11-26T10:15:30.123Z",
        "current_url": f"https://app.example.com/billing?reset_token={QUERY_TOKEN}#t={QUERY_TOKEN}",
        "referrer": f"https://mail.example.com/open?t={QUERY_TOKEN}",
        "elements_chain": chain(f"Pay with {CARD} ({EMAIL})", f"/pay?token={QUERY_TOKEN}"),
        "$el_text": f"Pay with {CARD} ({EMAIL})",
        "button_or_link_text": f"Pay with {CARD}",
        "link_destination": f"/pay?token={QUERY_TOKEN}",
        "ip": IP,
        "note": f"order {CUSTOM} for {EMAIL}",
    }


def webhook_template(session: str) -> dict[str, Any]:
    return {
        "event": {
            "event": "$pageview",
            "uuid": str(uuid.uuid4()),
            "distinct_id": "user-7",
            "timestamp": "2026-11-26T10:15:31.000Z",
            "properties": {
                "$session_id": session,
                "$current_url": f"https://app.example.com/orders/{CUSTOM}?invite={QUERY_TOKEN}",
                "$ip": IP,
                "$set": {"email": EMAIL},
                "$initial_referrer": f"https://search.example.net/?q={QUERY_TOKEN}",
                "email": EMAIL,
            },
        },
        "person": {"properties": {"email": EMAIL, "name": "Jane"}},
    }


def capture_batch(token: str, session: str) -> dict[str, Any]:
    base = {"token": token, "$session_id": session, "$lib": "web", "$ip": IP}
    return {
        "api_key": token,
        "sent_at": "2026-11-26T10:15:33.000Z",
        "batch": [
            {
                "event": "$autocapture",
                "uuid": str(uuid.uuid4()),
                "distinct_id": EMAIL,
                "timestamp": "2026-11-26T10:15:32.000Z",
                "properties": {
                    **base,
                    "$event_type": "click",
                    "$current_url": f"https://app.example.com/checkout?coupon={QUERY_TOKEN}",
                    "$elements_chain": chain(f"Card {CARD}", f"https://pay.example.com/?s={QUERY_TOKEN}"),
                    "email": EMAIL,
                },
            },
            {
                "event": "$identify",
                "uuid": str(uuid.uuid4()),
                "distinct_id": EMAIL,
                "timestamp": "2026-11-26T10:15:32.500Z",
                "properties": {
                    **base, "$set": {"email": EMAIL, "last_ip": IP}, "$anon_distinct_id": "anon-1",
                },
            },
        ],
    }


def assert_clean(text: str, where: str) -> None:
    low = text.lower()
    for secret in SECRETS:
        assert secret.lower() not in low, f"{secret!r} found in {where}"
    assert "jane.doe%2bvip%40example.org" not in low


@pytest.mark.slow
async def test_redacted_values_appear_nowhere(
    spawn_receiver: Callable[..., Any], database_url: str
) -> None:
    proc = spawn_receiver(
        RECEIVER_PII_HASH_KEY=HASH_KEY, RECEIVER_LOG_JSON="true", RECEIVER_LOG_LEVEL="DEBUG"
    )
    base = proc.base_url
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        r = await client.post(
            "/products",
            json={"product_id": "strict", "contact_email": "ops@example.com", "privacy_policy": POLICY},
        )
        assert r.status_code == 201, r.text
        creds = r.json()
        auth = {"Authorization": f"Bearer {creds['unkey_key']}"}
        secret = {"x-posthog-secret": creds["webhook_secret"]}

        started = asyncio.Event()
        streamed = 3  # two webhook events and the captured click ($identify is not streamed)
        live = asyncio.create_task(
            read_stream(f"{base}/stream/strict", headers=auth, frames=streamed, started=started)
        )
        await asyncio.wait_for(started.wait(), 10)

        forwarded = {"X-Forwarded-For": FORWARDED_IP, "X-Real-IP": FORWARDED_IP}
        r = await client.post("/webhook/strict", json=webhook_flat("s-1"), headers={**secret, **forwarded})
        assert r.status_code == 200, r.text
        r = await client.post("/webhook/strict", json=webhook_template("s-1"), headers=secret)
        assert r.status_code == 200, r.text
        r = await client.post(
            "/e/", content=json.dumps(capture_batch(creds["capture_token"], "s-2")),
            headers={"Content-Type": "application/json", **forwarded},
        )
        assert r.status_code == 200, r.text

        live_bytes = await live
        replay_bytes = await read_stream(
            f"{base}/stream/strict?since=0", headers=auth, frames=streamed
        )

    rows = await fetch(database_url, "SELECT row_to_json(e)::text AS j FROM events e ORDER BY position")
    assert len(rows) == 4  # capture adds a click and an $identify
    for row in rows:
        assert_clean(row["j"], "an events row")
    dump = await dump_database(database_url)
    assert_clean(dump, "the database")
    assert "127.0.0.1" not in dump  # the clients' own address is not stored either
    assert_clean(live_bytes.decode(), "the live stream")
    assert_clean(replay_bytes.decode(), "the replayed stream")

    # What is kept is still useful: the keyed hash, the page without its query, the text.
    typed = await fetch(
        database_url,
        "SELECT email, distinct_id, current_url, referrer, link_target, element_text, "
        "payload FROM events ORDER BY position",
    )
    assert typed[0]["email"] == hashed(EMAIL) and typed[0]["distinct_id"] == hashed(EMAIL)
    assert typed[0]["current_url"] == "https://app.example.com/billing"
    assert typed[0]["referrer"] == "https://mail.example.com/open"
    assert typed[0]["link_target"] == "/pay"
    assert typed[0]["element_text"] == "Pay with [redacted] ([redacted])"
    assert typed[1]["current_url"] == "https://app.example.com/orders/[redacted]"
    assert typed[2]["distinct_id"] == hashed(EMAIL)
    assert hashed(EMAIL).encode() in live_bytes
    assert b'"email":"' + hashed(EMAIL).encode() in replay_bytes

    # Logs: the process's whole output (stopped first, so everything is flushed), every line
    # JSON, no secret in any of them.
    assert proc.terminate() == 0
    log = proc.log()
    assert "Application startup complete" in log
    assert_clean(log, "the logs")
    assert creds["webhook_secret"] not in log and creds["unkey_key"] not in log


@pytest.mark.slow
async def test_default_policy_keeps_email_and_query_but_never_cards_or_ips(
    spawn_receiver: Callable[..., Any], database_url: str
) -> None:
    """The control: the same detection finds what the default policy keeps."""
    proc = spawn_receiver()
    async with httpx.AsyncClient(base_url=proc.base_url, timeout=10) as client:
        r = await client.post("/products", json={"product_id": "lax", "contact_email": "ops@example.com"})
        assert r.status_code == 201, r.text
        secret = {"x-posthog-secret": r.json()["webhook_secret"]}
        r = await client.post("/webhook/lax", json=webhook_flat("s-1"), headers=secret)
        assert r.status_code == 200, r.text
    [row] = await fetch(database_url, "SELECT row_to_json(e)::text AS j, email, current_url FROM events e")
    assert row["email"] == EMAIL
    assert QUERY_TOKEN in row["current_url"]
    assert CARD_DIGITS not in row["j"] and CARD not in row["j"]
    assert IP not in row["j"]
