"""POST /ingest/{product_id} (and batches on /webhook): every guarantee of the webhook, on real Postgres."""

from __future__ import annotations

import time
import uuid
from typing import Any

import asyncpg
import httpx

from receiver.storage import store
from tests.conftest import register_product
from tests.pull.helpers import amplitude, hog, posthog_batch_element, register_project

APP = "https://app.example.com"


async def _rows(database_url: str, product_id: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(store.asyncpg_dsn(database_url))
    try:
        return await conn.fetch(
            "SELECT * FROM events WHERE product_id = $1 ORDER BY position", product_id
        )
    finally:
        await conn.close()


def _batch(n: int, user: str = "load-user") -> dict[str, Any]:
    session = str(uuid.uuid4())
    return {"batch": [
        posthog_batch_element(user=user, session=session, url=f"{APP}/p/{i}", text=f"B{i}",
                              ts=time.time() - n + i)
        for i in range(n)
    ]}


async def test_a_batch_of_ten_stores_ten_on_webhook_and_ingest(receiver: Any, database_url: str) -> None:
    legacy = register_product(receiver.base_url, "legacy-" + uuid.uuid4().hex[:6])
    body = _batch(10)
    r = httpx.post(legacy.webhook_url, json=body, headers={"x-posthog-secret": legacy.webhook_secret})
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ok", "duplicate": False, "position": 10, "stored": 10, "duplicates": 0}
    rows = await _rows(database_url, legacy.product_id)
    assert [row["element_text"] for row in rows] == [f"B{i}" for i in range(10)]
    assert {row["source"] for row in rows} == {"webhook"}
    assert [row["session_index"] for row in rows] == list(range(10))
    # PostHog retries: the same batch again stores nothing new.
    again = httpx.post(legacy.webhook_url, json=body, headers={"x-posthog-secret": legacy.webhook_secret})
    assert again.json() == {"status": "ok", "duplicate": True, "stored": 0, "duplicates": 10}

    project = register_project(receiver.base_url)
    r = project.post(_batch(10, "u2"), bearer=True)
    assert r.status_code == 200 and r.json()["stored"] == 10
    assert len(await _rows(database_url, project.product_id)) == 10


async def test_one_bad_element_refuses_the_whole_batch_naming_it(receiver: Any, database_url: str) -> None:
    p = register_project(receiver.base_url)
    for bad, detail in (
        ({"timestamp": "x", "properties": {}}, "batch[3]: field 'event' is required"),
        ("not an event", "batch[3]: expected a JSON object, got str"),
        ({"event": "$autocapture", "distinct_id": "a\x01b", "properties": {}},
         "batch[3]: distinct_id contains control characters"),
    ):
        body = _batch(10)
        body["batch"][3] = bad
        r = p.post(body)
        assert r.status_code == 400, r.text
        assert r.json()["detail"].startswith(detail), r.json()
    r = p.post({"events": [amplitude("$pageview", user="u", url=APP), {"user_id": "u"}]}, bearer=True)
    assert r.status_code == 400
    assert r.json()["detail"] == "events[1]: field 'event_type' is required and must be a non-empty string"
    for empty in ({"batch": []}, {"events": []}):
        r = p.post(empty)
        assert r.status_code == 400 and "holds no events" in r.json()["detail"]
    assert p.post({"batch": {"not": "a list"}}).status_code == 400
    assert await _rows(database_url, p.product_id) == []


async def test_batches_and_amplitude_bodies_are_held_to_the_request_budgets(
    receiver: Any, database_url: str
) -> None:
    from receiver.ingest.budget import MAX_EVENTS_PER_REQUEST, MAX_STRING_CHARS

    p = register_project(receiver.base_url)
    # Small per event, so the body fits its byte limit: the event count is what refuses it.
    tiny = [{"event": "e", "distinct_id": "u", "uuid": str(uuid.uuid4())}
            for _ in range(MAX_EVENTS_PER_REQUEST + 1)]
    r = p.post({"batch": tiny})
    assert r.status_code == 413, r.text
    assert "RECEIVER_MAX_EVENTS_PER_REQUEST" in r.json()["detail"]
    big = amplitude("$autocapture", user="u", url=APP, note="x" * (MAX_STRING_CHARS + 1))
    r = p.post({"events": [amplitude("$pageview", user="u", url=APP), big]}, bearer=True)
    assert r.status_code == 413, r.text
    assert r.json()["detail"].startswith("events[1]: "), r.json()
    assert await _rows(database_url, p.product_id) == []
    # Exactly at the limit is fine.
    r = p.post({"batch": tiny[:MAX_EVENTS_PER_REQUEST]})
    assert r.status_code == 200 and r.json()["stored"] == MAX_EVENTS_PER_REQUEST


async def test_both_secret_headers_and_both_registrations_work_on_both_routes(
    receiver: Any, database_url: str
) -> None:
    legacy = register_product(receiver.base_url, "both-" + uuid.uuid4().hex[:6])
    project = register_project(receiver.base_url)
    one = hog("$pageview", user="u", session="s", url=f"{APP}/x")
    for product_id, secret in ((legacy.product_id, legacy.webhook_secret),
                               (project.product_id, project.ingest_secret)):
        base = receiver.base_url
        for url, headers in (
            (f"{base}/ingest/{product_id}", {"x-posthog-secret": secret}),
            (f"{base}/ingest/{product_id}", {"Authorization": f"Bearer {secret}"}),
            (f"{base}/webhook/{product_id}", {"x-posthog-secret": secret}),
        ):
            r = httpx.post(url, json={**one, "uuid": str(uuid.uuid4())}, headers=headers)
            assert r.status_code == 200, (url, headers, r.text)
        for headers in ({}, {"x-posthog-secret": "wrong"}, {"Authorization": "Bearer wrong"},
                        {"Authorization": f"Basic {secret}"}):
            r = httpx.post(f"{base}/ingest/{product_id}", json=one, headers=headers)
            assert r.status_code == 401, (headers, r.text)
        assert len(await _rows(database_url, product_id)) == 3
    assert httpx.post(f"{receiver.base_url}/ingest/prod_nope", json=one,
                      headers={"x-posthog-secret": "x"}).status_code == 404
    # The MCP key is for reading only.
    r = httpx.post(project.ingest_url, json=one, headers={"Authorization": f"Bearer {project.mcp_key}"})
    assert r.status_code == 401


async def test_the_legacy_amplitude_path_takes_bearer_only(receiver: Any, database_url: str) -> None:
    p = register_project(receiver.base_url, "amplitude")
    url = f"{receiver.base_url}/ingest/amplitude/{p.product_id}"
    body = {"events": [amplitude("$autocapture", user="u-1", url=f"{APP}/billing", text="Upgrade")]}
    r = httpx.post(url, json=body, headers={"Authorization": f"Bearer {p.ingest_secret}"}, timeout=10)
    assert r.status_code == 200, r.text
    # Amplitude sends the secret as a Bearer token; a PostHog header or another product's
    # secret is not accepted there.
    other = register_project(receiver.base_url, "amplitude")
    for headers in ({"x-posthog-secret": p.ingest_secret}, {"Authorization": "Bearer wrong"},
                    {"Authorization": f"Bearer {other.ingest_secret}"}):
        assert httpx.post(url, json=body, headers=headers, timeout=10).status_code == 401, headers
    rows = await _rows(database_url, p.product_id)
    assert [(row["source"], row["distinct_id"], row["element_text"]) for row in rows] == [
        ("amplitude", "u-1", "Upgrade")
    ]


async def test_amplitude_events_map_as_the_sdk_template_defines(receiver: Any, database_url: str) -> None:
    p = register_project(receiver.base_url, "amplitude")
    now = int(time.time() * 1000)
    events = [
        amplitude("$pageview", user="", device="dev-anon", session=-1, url=f"{APP}/pricing?ref=ad",
                  ts_ms=now - 5000),
        amplitude("$autocapture", user="u-7", session=1767225600123, url=f"{APP}/billing",
                  text="Upgrade plan", tag="button", ts_ms=now - 4000),
        amplitude("$autocapture", user="u-7", session=1767225600123, url=f"{APP}/settings",
                  text="Company name", tag="input", kind="change", ts_ms=now - 3000),
        amplitude("$autocapture", user="u-7", session=1767225600123, url=f"{APP}/settings",
                  text="Profile", tag="form", kind="submit", ts_ms=now - 2000),
        amplitude("Report Exported", user="u-7", session=1767225600123, url=f"{APP}/reports",
                  ts_ms=now - 1000, format="csv"),
    ]
    r = p.post({"events": events}, bearer=True)
    assert r.status_code == 200 and r.json()["stored"] == 5, r.text
    rows = await _rows(database_url, p.product_id)
    got = [(x["action_type"], x["title"], x["distinct_id"], x["session_id"]) for x in rows]
    assert got == [
        ("pageview", "Page Load: Pricing", "dev-anon", "dev-anon"),
        ("click", "Click Upgrade plan button", "u-7", "1767225600123"),
        ("type", "Change Company name field", "u-7", "1767225600123"),
        ("submit", "Submit Profile form", "u-7", "1767225600123"),
        ("custom", "Report Exported", "u-7", "1767225600123"),
    ]
    assert {x["source"] for x in rows} == {"amplitude"}
    assert rows[0]["canonical_url"] == f"{APP}/pricing" and rows[0]["current_url"] == f"{APP}/pricing?ref=ad"
    assert rows[1]["email"] == "u-7@example.com" and rows[1]["element_tag"] == "button"
    assert abs(rows[1]["occurred_at"].timestamp() * 1000 - (now - 4000)) < 1
    # Amplitude retries a failed delivery with the same body: nothing is stored twice.
    again = p.post({"events": events}, bearer=True)
    assert again.json()["stored"] == 0 and again.json()["duplicates"] == 5


async def test_ingest_is_503_while_the_database_is_down(receiver: Any, pg: Any, database_url: str) -> None:
    p = register_project(receiver.base_url)
    assert p.post(hog("$pageview", user="u", session="s", url=APP)).status_code == 200
    assert p.live("u").status_code == 200
    name = database_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(pg.dsn("postgres"))
    try:
        await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        r = p.post(_batch(3), bearer=True)
        assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
        r = p.live("u")
        assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
    finally:
        await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        await admin.close()
    assert p.post(_batch(3), bearer=True).status_code == 200
    assert len(p.live("load-user").json()["actions"]) == 3


def test_a_project_product_cannot_be_rotated_around_its_owner_token(receiver: Any) -> None:
    p = register_project(receiver.base_url)
    r = httpx.post(f"{receiver.base_url}/products", timeout=10, json={
        "product_id": p.product_id, "contact_email": "x@example.com", "force_reregister": True})
    assert r.status_code == 403 and "owner_token" in r.json()["detail"]
    assert p.live("u").status_code == 200  # its key still works: nothing was rotated
