"""``POST /sessions/link`` from a real page: the demo app in headless Chromium links its PostHog
session to a conversation (a cross-origin fetch, CORS preflight included), and the frames the
stock ``AsyncConnectorClient`` reads for that session carry the ``conversation_id`` from then
on. The page also runs the linking snippet of docs/push.md."""

from __future__ import annotations

import pytest

from tests.docblocks import ROOT, one_block

from .browser import open_demo, wait_until
from .test_demo_e2e import TIMEOUT, StreamReader

pytestmark = pytest.mark.browser


async def test_the_demo_page_links_its_session_and_frames_gain_the_conversation(
        chromium, demo_app_factory, receiver, make_product):
    product = make_product("demo-link")
    app = demo_app_factory(api_host=receiver.base_url, token=product.capture_token,
                           product_id=product.product_id)
    posts: list[tuple[str, str]] = []

    def watch(context):
        context.on("request", lambda req: posts.append((req.method, req.url))
                   if req.url.endswith("/sessions/link") else None)

    async with StreamReader(product) as stream:
        ctx, page = await open_demo(chromium, app.url, "user-carol", "carol@example.com",
                                    setup=watch)
        try:
            await page.click("#nav-team")
            await page.wait_for_function("window.demo && window.demo.posthog === true")
            session = await page.evaluate("posthog.get_session_id()")
            await wait_until(lambda: any(p.session_id == session for p in stream.payloads),
                             timeout=TIMEOUT, what="the team page view on the stream")
            status = await page.evaluate("demo.linkConversation('conv-demo-1')")
            assert status == 200
            await page.click("text=Invite member")
            linked, action = await stream.action("user-carol", "Invite member")

            # The snippet shown in docs/push.md, run by the page as it is.
            snippet = one_block(ROOT / "docs" / "push.md", "function linkConversation",
                                "javascript").text
            status = await page.evaluate(
                f"""async () => {{ {snippet}
                    const res = await linkConversation({receiver.base_url!r},
                        {product.product_id!r}, {product.capture_token!r}, "conv-demo-2");
                    return res.status; }}"""
            )
            assert status == 200
            await page.keyboard.press("Escape")
            await page.click("#nav-billing")
            await page.wait_for_function("window.demo && window.demo.posthog === true")
            await page.click("text=Upgrade plan")
            relinked, raction = await stream.action("user-carol", "Upgrade plan")
        finally:
            await ctx.close()

    first = next(p for p in stream.payloads if p.session_id == session)
    assert (first.conversation_id, first.actions[0].conversation_id) == (None, None)
    assert linked.session_id == session
    assert (linked.conversation_id, action.conversation_id) == ("conv-demo-1", "conv-demo-1")
    assert relinked.session_id == session
    assert (relinked.conversation_id, raction.conversation_id) == ("conv-demo-2", "conv-demo-2")
    # A JSON POST to another origin is preflighted: had the receiver not answered the OPTIONS
    # for this path, Chromium would have blocked the POST and the page would have got 0.
    assert [m for m, _ in posts].count("POST") == 2
