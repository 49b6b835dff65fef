"""``POST /sessions/link``: who may call it, what it refuses, its CORS answers, and its effect:
every later event of the session carries ``conversation_id`` on the stream (read by the stock
``AsyncConnectorClient``), in the table, and not the events before the link."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest
from autoplay_sdk import ActionsPayload, AsyncConnectorClient

from tests.conftest import LiveReceiver, Product
from tests.faults.kit import asql, new_product_id, sql
from tests.push.helpers import post_events, receiver_cli

ORIGIN = "https://app.acme.example"


def _link(base: str, product: Product, session: str, conversation: str, **extra: object) -> httpx.Response:
    body = {"product_id": product.product_id, "session_id": session,
            "conversation_id": conversation, **extra}
    return httpx.post(f"{base}/sessions/link", json=body, headers={"Origin": ORIGIN}, timeout=10)


async def test_linked_sessions_carry_the_conversation_on_the_stream_from_then_on(
    receiver: LiveReceiver, make_product: Callable[..., Product], database_url: str
) -> None:
    product = make_product(new_product_id("link"))
    run = product.product_id
    session, other = f"{run}-s", f"{run}-other"
    payloads: list[ActionsPayload] = []
    connected = asyncio.Event()
    client = AsyncConnectorClient(url=product.stream_url, token=product.stream_key,
                                  on_connect=connected.set)

    async def on_actions(p: ActionsPayload) -> None:
        payloads.append(p)

    client.on_actions(on_actions)
    task = client.run_in_background()
    try:
        await asyncio.wait_for(connected.wait(), 20)
        before = await asyncio.to_thread(post_events, product, run, range(2), session_id=session)
        r = await asyncio.to_thread(_link, receiver.base_url, product, session, "conv-1",
                                    token=product.capture_token)
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "linked", "product_id": run, "session_id": session,
                            "conversation_id": "conv-1"}
        after = await asyncio.to_thread(post_events, product, run, range(2, 4), session_id=session)
        unlinked = await asyncio.to_thread(post_events, product, run, range(4, 5), session_id=other)
        # Linking again replaces the conversation.
        r = await asyncio.to_thread(_link, receiver.base_url, product, session, "conv-2",
                                    token=product.capture_token)
        assert r.status_code == 200
        relinked = await asyncio.to_thread(post_events, product, run, range(5, 6), session_id=session)
        deadline = asyncio.get_running_loop().time() + 20
        while len(payloads) < 6 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
    finally:
        client.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    assert len(payloads) == 6
    convs = [(p.conversation_id, p.actions[0].conversation_id) for p in payloads]
    assert convs == [(None, None)] * 2 + [("conv-1", "conv-1")] * 2 + [(None, None)] + [
        ("conv-2", "conv-2")]
    # Indexes continue across the link (it does not restart the session's counter).
    assert [p.actions[0].index for p in payloads if p.session_id == session] == [0, 1, 2, 3, 4]
    rows = await asql(database_url, "SELECT position, conversation_id FROM events "
                      "WHERE product_id = $1 ORDER BY position", run)
    assert [r["conversation_id"] for r in rows] == [None, None, "conv-1", "conv-1", None, "conv-2"]
    assert [r["position"] for r in rows] == before + after + unlinked + relinked


def test_a_session_linked_before_its_first_event(
    receiver: LiveReceiver, make_product: Callable[..., Product], database_url: str
) -> None:
    product = make_product(new_product_id("early"))
    session = f"{product.product_id}-new"
    assert _link(receiver.base_url, product, session, "conv-0",
                 token=product.capture_token).status_code == 200
    post_events(product, product.product_id, range(2), session_id=session)
    rows = sql(database_url, "SELECT session_index, conversation_id FROM events "
               "WHERE product_id = $1 ORDER BY position", product.product_id)
    assert [(r[0], r[1]) for r in rows] == [(0, "conv-0"), (1, "conv-0")]


def test_who_may_link(receiver: LiveReceiver, make_product: Callable[..., Product],
                      database_url: str) -> None:
    product = make_product(new_product_id("auth"))
    s = "sess-1"
    # token (the default): the product's capture token, and nothing else.
    assert _link(receiver.base_url, product, s, "c").status_code == 401
    assert _link(receiver.base_url, product, s, "c", token="phc_wrong").status_code == 401
    assert _link(receiver.base_url, product, s, "c", token=product.webhook_secret).status_code == 401
    assert _link(receiver.base_url, product, s, "c", token=product.capture_token).status_code == 200
    # open: anyone, as the hosted connector (the SDK's snippet sends no token).
    out = receiver_cli(database_url, "product", "session-link", product.product_id, "open", "--json")
    assert '"open"' in out.stdout
    assert _wait_status(lambda: _link(receiver.base_url, product, s, "c"), 200)
    # off: refused.
    receiver_cli(database_url, "product", "session-link", product.product_id, "off")
    assert _wait_status(lambda: _link(receiver.base_url, product, s, "c",
                                      token=product.capture_token), 403)
    shown = receiver_cli(database_url, "product", "session-link", product.product_id, "--json")
    assert '"off"' in shown.stdout
    # Unknown product: 404; set at registration.
    ghost = Product("no-such-product", "", "", "", "", receiver.base_url)
    assert _link(receiver.base_url, ghost, s, "c").status_code == 404
    opened = make_product(new_product_id("reg"), session_link="open")
    assert opened.raw["session_link"] == "open"
    assert _link(receiver.base_url, opened, s, "c").status_code == 200


def _wait_status(call: Callable[[], httpx.Response], status: int) -> bool:
    """The product cache is per process and refreshed by NOTIFY: wait for the change."""
    import time

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if call().status_code == status:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[]", 400, "JSON object"),
        (b'{"product_id": "x"}', 400, "session_id"),
        (b'{"product_id": "x", "session_id": "s", "conversation_id": 5}', 400, "conversation_id"),
        (b'{"product_id": "x", "session_id": "", "conversation_id": "c"}', 400, "session_id"),
        (b'{"product_id": "x", "session_id": "a\\u0000b", "conversation_id": "c"}', 400,
         "control characters"),
        (b'{"product_id": "x", "session_id": "s", "conversation_id": "' + b"c" * 300 + b'"}', 400,
         "256"),
        (b'{"pad": "' + b"x" * 5000 + b'"}', 413, "larger than"),
    ],
)
def test_bad_bodies_get_a_clear_error_and_store_nothing(
    receiver: LiveReceiver, database_url: str, body: bytes, status: int, message: str
) -> None:
    r = httpx.post(f"{receiver.base_url}/sessions/link", content=body,
                   headers={"Content-Type": "application/json", "Origin": ORIGIN})
    assert r.status_code == status and message in r.json()["detail"], r.text
    assert r.headers["access-control-allow-origin"] == ORIGIN  # the page can read the error
    r = httpx.post(f"{receiver.base_url}/sessions/link", content=b"a=b",
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415
    assert sql(database_url, "SELECT count(*) FROM session_counters")[0][0] == 0


def test_cors_preflight_as_the_browser_sends_it(receiver: LiveReceiver) -> None:
    r = httpx.options(f"{receiver.base_url}/sessions/link", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in r.headers["access-control-allow-methods"]
    assert r.headers["access-control-allow-headers"].lower() == "content-type"
    assert "access-control-allow-credentials" not in r.headers
    # Only this path: the product API stays closed to browsers.
    r = httpx.options(f"{receiver.base_url}/products", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in r.headers


def test_links_are_rate_limited_per_address(
    receiver_factory: Callable[..., LiveReceiver], database_url: str
) -> None:
    live = receiver_factory(link_rate_limit=0.5, link_burst=3)
    product = Product("rl-none", "", "", "", "", live.base_url)
    codes = [_link(live.base_url, product, "s", "c").status_code for _ in range(5)]
    assert codes[:3] == [404, 404, 404] and codes[3:] == [429, 429]
    r = _link(live.base_url, product, "s", "c")
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.headers["access-control-allow-origin"] == ORIGIN


def test_live_activity_and_the_mcp_tool_carry_the_linked_conversation(
    receiver: LiveReceiver, make_product: Callable[..., Product]
) -> None:
    from tests.pull.helpers import live_activity

    product = make_product(new_product_id("linkread"))
    run = product.product_id
    session, user = f"{run}-s", f"{run}-user"
    post_events(product, run, range(1), session_id=session, distinct_id=user)
    r = _link(receiver.base_url, product, session, "conv-read", token=product.capture_token)
    assert r.status_code == 200, r.text
    post_events(product, run, range(1, 3), session_id=session, distinct_id=user)
    r = live_activity(receiver.base_url, run, user, product.raw["mcp_key"])
    assert r.status_code == 200, r.text
    # Oldest first: the event before the link has none, the two after it carry the conversation.
    assert [a["conversation_id"] for a in r.json()["actions"]] == [None, "conv-read", "conv-read"]
