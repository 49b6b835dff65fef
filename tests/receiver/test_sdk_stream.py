"""The stock autoplay-sdk 0.7.2 clients against our stream, and the stream protocol itself."""

from __future__ import annotations

import asyncio
import queue
import threading
from datetime import UTC, datetime

import httpx
import pytest
from autoplay_sdk import ActionsPayload, AsyncConnectorClient, ConnectorClient

from tests.payloads import pageview, unique
from tests.sse import Collector

TIMEOUT = 10


async def post(client: httpx.AsyncClient, product, body: dict) -> httpx.Response:  # type: ignore[no-untyped-def]
    return await client.post(
        product.webhook_url, json=body, headers={"x-posthog-secret": product.webhook_secret}
    )


async def test_async_client_receives_every_field(receiver, make_product) -> None:  # type: ignore[no-untyped-def]
    product = make_product("acme")
    got: asyncio.Queue[ActionsPayload] = asyncio.Queue()
    connected = asyncio.Event()

    async def on_actions(payload: ActionsPayload) -> None:
        await got.put(payload)

    client = AsyncConnectorClient(url=product.stream_url, token=product.stream_key, on_connect=connected.set)
    client.on_actions(on_actions)
    task = client.run_in_background()
    try:
        await asyncio.wait_for(connected.wait(), TIMEOUT)
        async with httpx.AsyncClient() as http:
            r = await post(http, product, unique())
            assert r.status_code == 200, r.text
            r = await post(http, product, pageview(current_url="https://app.example.com/settings/billing"))
            assert r.status_code == 200
        first = await asyncio.wait_for(got.get(), TIMEOUT)
        second = await asyncio.wait_for(got.get(), TIMEOUT)
    finally:
        client.stop()
        task.cancel()

    assert first.product_id == "acme"
    assert first.session_id == "0193f0c2-7d1e-7a44-9c1b-5f2e8a9d0b11"
    assert first.user_id == "user-42"
    assert first.email == "jane.doe@example.com"
    assert first.count == 1 and len(first.actions) == 1
    assert abs(first.forwarded_at - datetime.now(UTC).timestamp()) < 60
    action = first.actions[0]
    assert action.type == "click"
    assert action.title == "Click Invite member button"
    assert action.description == "User clicked Invite member button on the team page"
    assert action.raw_url == "https://app.example.com/team?tab=members"
    assert action.canonical_url == "https://app.example.com/team"
    assert action.index == 0
    assert action.timestamp_start == datetime(2026, 11, 26, 10, 15, 30, 123000, tzinfo=UTC).timestamp()
    assert action.timestamp_end == action.timestamp_start
    assert (action.session_id, action.user_id, action.email) == (
        first.session_id,
        "user-42",
        "jane.doe@example.com",
    )
    page = second.actions[0]
    assert page.type == "pageview"
    assert page.title == "Page Load: Billing"
    assert page.description == "User landed on the Billing page"
    assert page.index == 1  # same session: the per-session index advances
    assert second.forwarded_at > first.forwarded_at
    # The LLM-facing text the SDK builds from it.
    assert "User clicked Invite member button on the team page" in first.to_text()


def test_sync_client_receives(receiver_factory) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import register_product

    # The sync client only notices stop() when a frame arrives: keep heartbeats frequent.
    live = receiver_factory(heartbeat_seconds=0.3)
    product = register_product(live.base_url, "sync")
    got: queue.Queue[ActionsPayload] = queue.Queue()
    connected = threading.Event()
    client = ConnectorClient(url=product.stream_url, token=product.stream_key, on_connect=connected.set)
    client.on_actions(got.put)
    thread = client.run_in_background()
    try:
        assert connected.wait(TIMEOUT)
        r = httpx.post(
            product.webhook_url,
            json=unique(distinct_id="sync-user"),
            headers={"x-posthog-secret": product.webhook_secret},
        )
        assert r.status_code == 200
        payload = got.get(timeout=TIMEOUT)
    finally:
        client.stop()
        thread.join(timeout=15)
    assert payload.user_id == "sync-user"
    assert payload.actions[0].title == "Click Invite member button"
    assert payload.product_id == product.product_id


async def test_heartbeat_first_then_when_idle(receiver_factory, make_product) -> None:  # type: ignore[no-untyped-def]
    live = receiver_factory(heartbeat_seconds=0.2)
    from tests.conftest import register_product

    product = register_product(live.base_url, "hb")
    async with Collector(product.stream_url, product.stream_key) as c:
        assert c.status == 200
        assert c.response_headers is not None
        assert c.response_headers["content-type"] == "text/event-stream; charset=utf-8"
        await c.wait_heartbeats(3)
        assert c.payloads == []
        # Frames in between do not stop the idle heartbeats (the timer is re-armed, not lost).
        async with httpx.AsyncClient() as http:
            for n in range(3):
                assert (await post(http, product, unique())).status_code == 200
                await c.wait_for(n + 1)
        seen = c.heartbeats
        await c.wait_heartbeats(seen + 2)


async def test_live_frames_have_no_id_and_resume_frames_do(receiver, make_product) -> None:  # type: ignore[no-untyped-def]
    product = make_product()
    async with httpx.AsyncClient() as http, Collector(product.stream_url, product.stream_key) as live:
        for _ in range(3):
            assert (await post(http, product, unique())).status_code == 200
        frames = await live.wait_for(3)
        assert all(f.id is None and f.event is None for f in frames)
        positions = [f.json["position"] for f in frames]
        assert positions == [1, 2, 3]

        async with Collector(product.stream_url + "?since=1", product.stream_key) as resumed:
            got = await resumed.wait_for(2)
            assert [f.id for f in got] == ["2", "3"]
            assert resumed.response_headers["last-event-id"] == "1"
            # Then it goes live, still with ids.
            assert (await post(http, product, unique())).status_code == 200
            got = await resumed.wait_for(3)
            assert got[-1].id == "4"


async def test_resume_by_header_beats_query(receiver, make_product) -> None:  # type: ignore[no-untyped-def]
    product = make_product()
    async with httpx.AsyncClient() as http:
        for _ in range(5):
            assert (await post(http, product, unique())).status_code == 200
    # A reconnecting EventSource sends Last-Event-ID with its original URL (?since=0).
    async with Collector(
        product.stream_url + "?since=0", product.stream_key, headers={"Last-Event-ID": "3"}
    ) as c:
        got = await c.wait_for(2)
        assert [f.id for f in got] == ["4", "5"]
    async with Collector(product.stream_url + "?since=0", product.stream_key) as c:
        got = await c.wait_for(5)
        assert [f.id for f in got] == ["1", "2", "3", "4", "5"]


async def test_replay_by_seconds(receiver, make_product, database_url) -> None:  # type: ignore[no-untyped-def]
    import asyncpg

    product = make_product()
    async with httpx.AsyncClient() as http:
        for _ in range(4):
            assert (await post(http, product, unique())).status_code == 200
    # Age the first two events by an hour, as if they had arrived earlier.
    conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        await conn.execute(
            "UPDATE events SET received_at = received_at - interval '1 hour' "
            "WHERE product_id = $1 AND position <= 2",
            product.product_id,
        )
    finally:
        await conn.close()
    async with Collector(product.stream_url + "?replay=300", product.stream_key) as c:
        got = await c.wait_for(2)
        assert [f.id for f in got] == ["3", "4"]
        async with httpx.AsyncClient() as http:
            assert (await post(http, product, unique())).status_code == 200
        got = await c.wait_for(3)
        assert got[-1].id == "5"
    async with Collector(product.stream_url + "?replay=7200", product.stream_key) as c:
        got = await c.wait_for(5)
        assert [f.id for f in got] == ["1", "2", "3", "4", "5"]


@pytest.mark.parametrize(
    ("path_product", "auth", "status"),
    [("real", "wrong", 401), ("real", None, 401), ("missing", "any", 404)],
)
def test_stream_rejections_are_json(receiver, make_product, path_product, auth, status) -> None:  # type: ignore[no-untyped-def]
    product = make_product()
    url = product.stream_url if path_product == "real" else f"{receiver.base_url}/stream/nope"
    headers = {"Authorization": f"Bearer {auth}"} if auth else {}
    r = httpx.get(url, headers=headers, timeout=5)
    assert r.status_code == status
    assert r.headers["content-type"] == "application/json"
    assert r.json()["detail"]


def test_stream_bad_since_is_400(receiver, make_product) -> None:  # type: ignore[no-untyped-def]
    product = make_product()
    for query in ("since=-1", "since=abc", "replay=abc"):
        r = httpx.get(
            f"{product.stream_url}?{query}",
            headers={"Authorization": f"Bearer {product.stream_key}"},
            timeout=5,
        )
        assert r.status_code == 400, query
        assert r.json()["detail"]


def test_trailing_slash_is_never_redirected(receiver, make_product) -> None:  # type: ignore[no-untyped-def]
    product = make_product()
    r = httpx.post(
        product.webhook_url + "/", json=unique(), headers={"x-posthog-secret": product.webhook_secret}
    )
    assert r.status_code == 404 and not r.is_redirect
    r = httpx.get(product.stream_url + "/", headers={"Authorization": f"Bearer {product.stream_key}"})
    assert r.status_code == 404 and not r.is_redirect


async def test_fan_out_to_several_subscribers_and_products_isolated(receiver, make_product) -> None:  # type: ignore[no-untyped-def]
    a, b = make_product("prod-a"), make_product("prod-b")
    async with (
        httpx.AsyncClient() as http,
        Collector(a.stream_url, a.stream_key) as a1,
        Collector(a.stream_url, a.stream_key) as a2,
        Collector(b.stream_url, b.stream_key) as b1,
    ):
        for i in range(3):
            assert (await post(http, a, unique(distinct_id=f"a-{i}"))).status_code == 200
        assert (await post(http, b, unique(distinct_id="b-0"))).status_code == 200
        got1 = await a1.wait_for(3)
        got2 = await a2.wait_for(3)
        gotb = await b1.wait_for(1)
        assert [f.json["user_id"] for f in got1] == ["a-0", "a-1", "a-2"]
        assert [f.data for f in got2] == [f.data for f in got1]  # byte-identical frames
        assert [f.json["user_id"] for f in gotb] == ["b-0"]
        assert gotb[0].json["position"] == 1  # positions are per product
        # Keys are per product: A's key cannot open B's stream.
        r = await http.get(b.stream_url, headers={"Authorization": f"Bearer {a.stream_key}"})
        assert r.status_code == 401
    assert len(b1.payloads) == 1
