"""POST /webhook/{product_id}: status codes, durability and dedup against real Postgres."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import httpx
import pytest

from tests.payloads import hog_payload, unique


def _dsn(database_url: str) -> str:
    return database_url.replace("+asyncpg", "")


async def rows(database_url: str, product_id: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(_dsn(database_url))
    try:
        return await conn.fetch("SELECT * FROM events WHERE product_id = $1 ORDER BY position", product_id)
    finally:
        await conn.close()


def post(product, body, *, secret=None, **kw):  # type: ignore[no-untyped-def]
    headers = {"x-posthog-secret": product.webhook_secret if secret is None else secret}
    headers.update(kw.pop("headers", {}))
    if isinstance(body, (bytes, str)):
        return httpx.post(product.webhook_url, content=body, headers=headers, timeout=10, **kw)
    return httpx.post(product.webhook_url, json=body, headers=headers, timeout=10, **kw)


async def test_200_means_committed_with_normalized_columns(receiver, make_product, database_url) -> None:  # type: ignore[no-untyped-def]
    product = make_product()
    r = post(product, hog_payload(uuid="0193f0c2-0000-7000-8000-000000000001"))
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "duplicate": False, "position": 1}
    # The 200 was sent after commit: a separate connection sees the row right away.
    [row] = await rows(database_url, product.product_id)
    assert row["position"] == 1
    assert row["source"] == "webhook"
    assert row["event"] == "$autocapture"
    assert row["action_type"] == "click"
    assert str(row["event_uuid"]) == "0193f0c2-0000-7000-8000-000000000001"
    assert row["session_id"] == "0193f0c2-7d1e-7a44-9c1b-5f2e8a9d0b11"
    assert row["distinct_id"] == "user-42"
    assert row["email"] == "jane.doe@example.com"
    assert row["current_url"] == "https://app.example.com/team?tab=members"
    assert row["canonical_url"] == "https://app.example.com/team"
    assert row["pathname"] == "/team"
    assert row["referrer"] == "$direct"
    # Element 0 of the chain, not the tutorial's hint (element_id "team-page" is an ancestor's).
    assert row["element_tag"] == "span"
    assert row["element_id"] is None
    assert row["element_text"] == "Invite member"
    assert row["title"] == "Click Invite member button"
    assert row["description"] == "User clicked Invite member button on the team page"
    assert row["session_index"] == 0
    assert row["occurred_at"].isoformat() == "2026-11-26T10:15:30.123000+00:00"
    assert json.loads(row["payload"]) == hog_payload(uuid="0193f0c2-0000-7000-8000-000000000001")


async def test_duplicates_get_200_and_no_second_row(receiver, make_product, database_url) -> None:  # type: ignore[no-untyped-def]
    product = make_product()
    with_uuid = unique()
    without_uuid = hog_payload(distinct_id="no-uuid")
    results = [post(product, b) for b in (with_uuid, with_uuid, without_uuid, without_uuid)]
    assert [r.status_code for r in results] == [200, 200, 200, 200]
    assert [r.json()["duplicate"] for r in results] == [False, True, False, True]
    stored = await rows(database_url, product.product_id)
    assert [r["position"] for r in stored] == [1, 2]
    assert stored[0]["dedup_key"] == "u:" + with_uuid["uuid"]
    assert stored[1]["dedup_key"].startswith("h:")


async def test_concurrent_duplicates_store_once(receiver, make_product, database_url) -> None:  # type: ignore[no-untyped-def]
    product = make_product()
    body = unique()
    async with httpx.AsyncClient() as http:
        results = await asyncio.gather(
            *(
                http.post(
                    product.webhook_url, json=body, headers={"x-posthog-secret": product.webhook_secret}
                )
                for _ in range(20)
            )
        )
    assert {r.status_code for r in results} == {200}
    assert sum(not r.json()["duplicate"] for r in results) == 1
    assert len(await rows(database_url, product.product_id)) == 1


def test_missing_or_wrong_secret_is_401(receiver, make_product) -> None:  # type: ignore[no-untyped-def]
    product = make_product()
    other = make_product()
    for secret in ("", "wrong", other.webhook_secret):
        r = post(product, unique(), secret=secret)
        assert r.status_code == 401, secret
        assert "x-posthog-secret" in r.json()["detail"]


def test_unknown_product_is_404(receiver, make_product) -> None:  # type: ignore[no-untyped-def]
    product = make_product()
    r = httpx.post(
        f"{receiver.base_url}/webhook/does-not-exist",
        json=unique(),
        headers={"x-posthog-secret": product.webhook_secret},
    )
    assert r.status_code == 404
    assert r.json()["detail"] == "unknown product 'does-not-exist'"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b"null", "expected a JSON object"),
        (b'"text"', "expected a JSON object"),
        (b"", "empty"),
        (json.dumps({"distinct_id": "x"}).encode(), "'event' is required"),
        (json.dumps(hog_payload(session_id="bad\nid")).encode(), "control characters"),
    ],
)
async def test_bad_json_is_400_and_stores_nothing(  # type: ignore[no-untyped-def]
    receiver, make_product, database_url, body, fragment
) -> None:
    product = make_product()
    r = post(product, body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert fragment in r.json()["detail"]
    assert await rows(database_url, product.product_id) == []


def test_body_over_limit_is_413(receiver_factory) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import register_product

    live = receiver_factory(max_body_bytes=4096)
    product = register_product(live.base_url, "small")
    big = hog_payload(button_or_link_text="x" * 5000)
    r = post(product, big)
    assert r.status_code == 413
    assert "4096" in r.json()["detail"]
    assert post(product, unique()).status_code == 200


def test_wrong_content_type_is_415(receiver, make_product) -> None:  # type: ignore[no-untyped-def]
    product = make_product()
    r = post(product, b"a=b", headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415
    assert r.json()["detail"]


def test_tolerates_missing_and_extra_fields(receiver, make_product) -> None:  # type: ignore[no-untyped-def]
    product = make_product()
    minimal = {"event": "$pageview", "distinct_id": "u1"}
    assert post(product, minimal).status_code == 200
    extra = unique(some_new_field={"nested": [1, 2]}, email="", session_id="", elements_chain=None)
    assert post(product, extra).status_code == 200


async def test_database_unavailable_is_503_then_recovers(  # type: ignore[no-untyped-def]
    receiver, make_product, pg, database_url
) -> None:
    product = make_product()
    assert post(product, unique()).status_code == 200
    name = database_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(pg.dsn("postgres"))
    try:
        await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
        r = post(product, unique())
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        assert "database unavailable" in r.json()["detail"]
        assert httpx.get(f"{receiver.base_url}/readyz").status_code == 503
        assert httpx.get(f"{receiver.base_url}/healthz").status_code == 200
    finally:
        await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        await admin.close()
    # No restart needed: the pool reconnects on the next request.
    assert post(product, unique()).status_code == 200
    assert httpx.get(f"{receiver.base_url}/readyz").json()["status"] == "ready"
    assert [r["position"] for r in await rows(database_url, product.product_id)] == [1, 2]


async def test_stock_webhook_template_body_is_understood(receiver, make_product, database_url) -> None:  # type: ignore[no-untyped-def]
    """PostHog's default HTTP Webhook body is {"event": {...}, "person": {...}}."""
    product = make_product()
    body = {
        "event": {
            "uuid": "0193f0c2-0000-7000-8000-0000000000aa",
            "event": "$autocapture",
            "distinct_id": "user-7",
            "elements_chain": (
                'a:attr__href="/settings/billing"href="/settings/billing"nth-child="1"'
                'nth-of-type="1"text="Billing";body:nth-child="2"nth-of-type="1"'
            ),
            "properties": {
                "$current_url": "https://app.example.com/dashboard",
                "$event_type": "click",
                "$session_id": "s-7",
            },
            "timestamp": "2026-11-26T10:00:00Z",
        },
        "person": {"properties": {"email": "seven@example.com"}},
    }
    r = post(product, body)
    assert r.status_code == 200, r.text
    [row] = await rows(database_url, product.product_id)
    assert (row["distinct_id"], row["session_id"], row["email"]) == ("user-7", "s-7", "seven@example.com")
    assert (row["element_tag"], row["element_text"], row["link_target"]) == (
        "a",
        "Billing",
        "/settings/billing",
    )
    assert row["title"] == "Click Billing link"
    assert str(row["event_uuid"]) == "0193f0c2-0000-7000-8000-0000000000aa"


def test_exhausted_pool_is_a_prompt_503_not_a_hang(receiver_factory) -> None:  # type: ignore[no-untyped-def]
    import threading

    from tests.conftest import register_product

    live = receiver_factory(db_pool_size=1, db_timeout_seconds=0.5)
    product = register_product(live.base_url, "pool")
    assert post(product, unique()).status_code == 200
    held, release = threading.Event(), asyncio.Event()

    async def hold() -> None:
        async with live.runtime.pool.acquire():
            held.set()
            await release.wait()

    future = asyncio.run_coroutine_threadsafe(hold(), live.loop)
    assert held.wait(10)
    try:
        r = post(product, unique())
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
    finally:
        live.loop.call_soon_threadsafe(release.set)
        future.result(10)
    assert post(product, unique()).status_code == 200
