"""The admin page's push section in headless Chromium: per endpoint its deliverer, state, lag
and dead letters; for the selected product its dead letters and latest attempts."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.browser.browser import CHROMIUM_ARGS
from tests.conftest import free_port, register_product
from tests.faults.kit import wait_for
from tests.push.endpoint import serve_endpoint
from tests.push.helpers import FAST, dead_positions, endpoint_row, post_events
from tests.unavailable import unavailable

pytestmark = pytest.mark.browser
TOKEN = "admin-push-token-0123456789abcdef"


async def test_the_admin_page_shows_lag_failures_and_dead_letters(
    receiver_factory: Callable[..., Any], database_url: str
) -> None:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        unavailable("Debian chromium is not installed: run scripts/browser-deps.sh (as root)")
    from playwright.async_api import async_playwright, expect

    live = receiver_factory(**FAST, push_max_attempts=1000)
    down_url = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    with serve_endpoint() as ep:
        ep.respond = lambda req: (400, {}) if req.position in (2, 4) else (200, {})
        shop = register_product(live.base_url, "acme-shop", integration_config={
            "mode": "push", "url": ep.url, "secret": "s" * 24})
        docs = register_product(live.base_url, "acme-docs", integration_config={
            "mode": "push", "url": down_url, "secret": "s" * 24})

        def prepare() -> None:  # blocking helpers: off the test's event loop
            post_events(shop, "shop", range(5))
            post_events(docs, "docs", range(3))
            wait_for(lambda: dead_positions(database_url, "acme-shop") == [2, 4],
                     what="2 dead letters")
            wait_for(lambda: endpoint_row(database_url, "acme-docs")["attempts"] >= 3,
                     what="the down endpoint retried")

        await asyncio.to_thread(prepare)

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1440, "height": 900})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(f"{live.base_url}/admin")  # loopback: no token needed
                shop_row = page.locator('#push tbody tr[data-product-id="acme-shop"]')
                docs_row = page.locator('#push tbody tr[data-product-id="acme-docs"]')
                await shop_row.wait_for(timeout=15_000)
                await expect(shop_row.locator("td.dead")).to_have_text("2", timeout=15_000)
                await expect(shop_row.locator("td.lag")).to_have_text("0")
                assert "receiver-push" in await shop_row.inner_text()  # who delivers it
                await expect(docs_row.locator("td.lag")).to_have_text("3", timeout=15_000)
                docs_text = await docs_row.inner_text()
                assert "retrying" in docs_text and "ConnectError" in docs_text
                assert await docs_row.get_attribute("data-state") == "retrying"

                await shop_row.click()
                detail = page.locator("#push-detail")
                await detail.wait_for(state="visible", timeout=15_000)
                dead = page.locator("#dead-letters tbody tr")
                await expect(dead).to_have_count(2, timeout=15_000)
                assert "HTTP 400" in await dead.nth(0).inner_text()
                assert [await dead.nth(i).locator("td").first.inner_text() for i in range(2)] == [
                    "2", "4"]
                attempts = page.locator("#attempts tbody tr")
                await expect(attempts).to_have_count(5)
                assert "delivered" in await attempts.nth(0).inner_text()
                assert not errors, errors
            finally:
                await browser.close()
    # The page's numbers are the API's.
    api = (await asyncio.to_thread(httpx.get, f"{live.base_url}/admin/api/push")).json()["endpoints"]
    assert {e["product_id"]: e["dead_letters"] for e in api} == {"acme-docs": 0, "acme-shop": 2}
