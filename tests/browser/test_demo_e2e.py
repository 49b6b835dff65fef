"""End to end, "Direct, on-prem": the demo app in headless Chromium sends its clicks with
posthog-js straight to a real receiver (no PostHog, no fake), and they land in the event table
and on the stream read by the stock ``AsyncConnectorClient``.

Nothing here tells posthog-js to autocapture beyond its defaults: it is the receiver's
``/array/<token>/config`` answer that switches autocapture on.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from autoplay_sdk import ActionsPayload, AsyncConnectorClient

from .browser import decode_capture_body, open_demo, wait_until

pytestmark = pytest.mark.browser

TIMEOUT = 30  # a deadline; passing runs take a second or two


class Wire:
    """What the page sent to the receiver and what it answered (no interception: real traffic)."""

    def __init__(self, receiver_url: str) -> None:
        self.origin = receiver_url.rstrip("/")
        self.sent: list[dict] = []
        self.answers: list[tuple[str, str, int]] = []
        self.problems: list[str] = []

    def attach(self, context: Any) -> None:
        context.on("request", self._on_request)
        context.on("response", self._on_response)
        context.on("requestfailed", self._on_failed)

    def _on_request(self, req: Any) -> None:
        parts = urlsplit(req.url)
        if not req.url.startswith(self.origin) or req.method != "POST" or parts.path != "/e/":
            return
        body = req.post_data_buffer or b""
        if not body:
            return
        self.sent.extend(decode_capture_body(body, req.headers.get("content-type", ""),
                                             parts.query))

    def _on_failed(self, req: Any) -> None:
        # Requests cut off by a navigation or by closing the context report ERR_ABORTED; posthog-js
        # resends what it still holds with sendBeacon on unload. Anything else is a real failure.
        if req.url.startswith(self.origin) and "ERR_ABORTED" not in (req.failure or ""):
            self.problems.append(f"{req.method} {req.url}: {req.failure}")

    def _on_response(self, resp: Any) -> None:
        if resp.url.startswith(self.origin):
            self.answers.append((resp.request.method, urlsplit(resp.url).path, resp.status))


class StreamReader:
    """The stock SDK client on the product's stream, collecting every payload."""

    def __init__(self, product: Any) -> None:
        self.payloads: list[ActionsPayload] = []
        self.connected = asyncio.Event()
        self.client = AsyncConnectorClient(url=product.stream_url, token=product.stream_key,
                                           on_connect=self.connected.set)

        async def on_actions(payload: ActionsPayload) -> None:
            self.payloads.append(payload)

        self.client.on_actions(on_actions)
        self.task: asyncio.Task | None = None

    async def __aenter__(self) -> StreamReader:
        self.task = self.client.run_in_background()
        await asyncio.wait_for(self.connected.wait(), TIMEOUT)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.client.stop()
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def action(self, user_id: str, text: str) -> tuple[ActionsPayload, Any]:
        def find() -> tuple[ActionsPayload, Any] | None:
            for p in self.payloads:
                for a in p.actions:
                    if p.user_id == user_id and a.type == "click" and text in a.title:
                        return p, a
            return None

        return await wait_until(find, timeout=TIMEOUT, what=f"{text!r} by {user_id} on the stream")


async def _rows(database_url: str, product_id: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return await conn.fetch(
            "SELECT source, event, event_uuid::text AS uuid, distinct_id, email, session_id,"
            " current_url, pathname, element_tag, element_text, title"
            " FROM events WHERE product_id = $1 ORDER BY position",
            product_id,
        )
    finally:
        await conn.close()


async def test_clicks_reach_the_event_table_and_the_stream(chromium, demo_app_factory, receiver,
                                                           make_product, database_url):
    product = make_product("demo-e2e")
    app = demo_app_factory(api_host=receiver.base_url, token=product.capture_token,
                           product_id=product.product_id)
    wire = Wire(receiver.base_url)
    users = {
        "alice": ("user-alice-e2e", "alice.e2e@example.com"),
        "bob": ("user-bob-e2e", "bob.e2e@example.com"),
    }
    sessions: dict[str, str] = {}
    contexts = []
    async with StreamReader(product) as stream:
        try:
            # Alice opens the invite flow on the Team page.
            ctx_a, alice = await open_demo(chromium, app.url, *users["alice"], setup=wire.attach)
            contexts.append(ctx_a)
            await alice.click("#nav-team")
            await alice.wait_for_function("window.demo && window.demo.posthog === true")
            await alice.click("text=Invite member")
            await alice.wait_for_selector("#invite-modal:not([hidden])")
            sessions["alice"] = await alice.evaluate("posthog.get_session_id()")

            # Bob, in another browser context, opens the upgrade modal on Billing.
            ctx_b, bob = await open_demo(chromium, app.url, *users["bob"], setup=wire.attach)
            contexts.append(ctx_b)
            await bob.click("#nav-billing")
            await bob.wait_for_function("window.demo && window.demo.posthog === true")
            await bob.click("text=Upgrade plan")
            sessions["bob"] = await bob.evaluate("posthog.get_session_id()")

            a_payload, a_action = await stream.action(users["alice"][0], "Invite member")
            b_payload, b_action = await stream.action(users["bob"][0], "Upgrade plan")
        finally:
            for ctx in contexts:
                await ctx.close()
            # shown by pytest only when the test fails
            print("receiver answers:", wire.answers, "problems:", wire.problems)
            print("stream:", [(p.user_id, [a.title for a in p.actions]) for p in stream.payloads])

    # --- on the stream, as the stock SDK client parses it
    assert a_payload.product_id == product.product_id
    assert (a_payload.user_id, a_payload.email) == users["alice"]
    assert a_payload.session_id == sessions["alice"]
    assert a_action.title == "Click Invite member button"
    assert "team" in a_action.description.lower()
    assert urlsplit(a_action.raw_url).path == "/team"
    assert (a_action.user_id, a_action.email, a_action.session_id) == (
        *users["alice"], sessions["alice"])

    assert (b_payload.user_id, b_payload.email) == users["bob"]
    assert b_payload.session_id == sessions["bob"] != sessions["alice"]
    assert b_action.title == "Click Upgrade plan button"
    assert urlsplit(b_action.raw_url).path == "/billing"

    # Pageviews came through too, for the same user and session.
    pageviews = [(p.user_id, urlsplit(a.raw_url).path) for p in stream.payloads
                 for a in p.actions if a.type == "pageview"]
    assert (users["alice"][0], "/team") in pageviews
    assert (users["bob"][0], "/billing") in pageviews

    # --- in the event table
    rows = await _rows(database_url, product.product_id)
    invite = [r for r in rows if r["event"] == "$autocapture" and r["element_text"] == "Invite member"]
    assert len(invite) == 1, rows
    row = invite[0]
    assert row["source"] == "capture"
    assert (row["distinct_id"], row["email"]) == users["alice"]
    assert row["session_id"] == sessions["alice"]
    assert row["pathname"] == "/team"
    assert row["element_tag"] == "button"
    # the row is the very event posthog-js sent (its uuid is the dedup key)
    sent = [e for e in wire.sent if e["event"] == "$autocapture"
            and e["properties"].get("$el_text") == "Invite member"]
    assert [e["uuid"] for e in sent] == [row["uuid"]]
    assert sent[0]["properties"]["$autocapture_disabled_server_side"] is False

    # Every event the browser sent is stored exactly once; nothing failed on the wire. (What
    # posthog-js sends with sendBeacon while a page unloads, $pageleave and anything still
    # queued, reaches the receiver but is invisible to Playwright: rows may exceed what we saw.)
    stored = [r["uuid"] for r in rows]
    assert len(stored) == len(set(stored))
    assert {r["source"] for r in rows} == {"capture"}
    assert {e["uuid"] for e in wire.sent} <= set(stored)
    assert "$pageleave" in {r["event"] for r in rows}
    assert wire.problems == []
    assert {status for method, path, status in wire.answers} == {200}, wire.answers
    assert any(path.startswith("/array/") for _, path, _ in wire.answers)


async def test_an_unknown_capture_token_is_refused_and_nothing_is_stored(
        chromium, demo_app_factory, receiver, make_product, database_url):
    product = make_product("demo-e2e-bad-token")
    app = demo_app_factory(api_host=receiver.base_url, token="phc_not_a_registered_token",
                           product_id=product.product_id)
    wire = Wire(receiver.base_url)
    ctx, page = await open_demo(chromium, app.url, "user-mallory", "mallory@example.com",
                                setup=wire.attach)
    try:
        await page.click("#nav-team")
        await page.wait_for_function("window.demo && window.demo.posthog === true")
        await page.click("text=Invite member")
        await wait_until(lambda: any(p == "/e/" and s == 401 for _, p, s in wire.answers),
                         timeout=TIMEOUT, what="a 401 for the unknown token")
    finally:
        await ctx.close()
        print("receiver answers:", wire.answers)
    assert await _rows(database_url, product.product_id) == []
