"""The admin page in headless Chromium: token login, counters, a posted event in the live tail.

Leaves ``build/screenshots/admin.png`` behind (git-ignored): the documentation site shows it.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.browser import CHROMIUM_ARGS
from tests.unavailable import unavailable

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "build" / "screenshots" / "admin.png"
TOKEN = "admin-browser-token-0123456789abcdef"
PAGES = ("team", "billing", "settings/members", "projects/42", "invites")


def event(page: str, text: str, kind: str = "click", distinct: str = "user-7") -> dict[str, Any]:
    body: dict[str, Any] = {
        "uuid": str(uuid.uuid4()),
        "distinct_id": distinct,
        "email": f"{distinct}@example.com",
        "session_id": "sess-" + distinct,
        "current_url": f"https://app.example.com/{page}",
    }
    if kind == "pageview":
        body["event"] = "$pageview"
    else:
        body.update(event="$autocapture", event_type="click", elements_chain=f'button:text="{text}"')
    return body


def register(base: str, pid: str, **extra: Any) -> dict[str, Any]:
    r = httpx.post(
        f"{base}/products", json={"product_id": pid, "contact_email": "ops@example.com", **extra},
        headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10,
    )
    assert r.status_code == 201, r.text
    return r.json()


async def test_admin_page_live_tail(receiver_factory: Callable[..., Any]) -> None:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        unavailable("Debian chromium is not installed: run scripts/browser-deps.sh (as root)")
    from playwright.async_api import async_playwright, expect

    live = receiver_factory(admin_token=TOKEN, admin_allow_loopback=False)
    base = live.base_url
    shop = register(base, "acme-shop")
    register(base, "acme-docs", privacy_policy={"email": "drop", "query": "strip"})
    secret = {"x-posthog-secret": shop["webhook_secret"]}

    async def post(body: dict[str, Any]) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.post(f"{base}/webhook/acme-shop", json=body, headers=secret)
            assert r.status_code == 200, r.text

    # Some history, so the counters and the chart have something to show.
    for i in range(24):
        page = PAGES[i % len(PAGES)]
        await post(event(page, "", "pageview", distinct=f"user-{i % 4}") if i % 3 == 0
                   else event(page, f"Button {i}", distinct=f"user-{i % 4}"))
        await asyncio.sleep(0.05)

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1440, "height": 900})
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"{base}/admin#token={TOKEN}")
            row = page.locator('#products tbody tr[data-product-id="acme-shop"]')
            await row.wait_for(timeout=15_000)
            assert "token" not in page.url  # taken out of the address bar
            await page.locator('#products tbody tr[data-product-id="acme-docs"]').wait_for()
            assert "24" in await row.inner_text()

            await row.click()
            await page.wait_for_selector("body[data-tail='live']", timeout=15_000)
            # The backlog (last 20 events) arrives first.
            # (Locator waits only: the page's CSP forbids the eval that wait_for_function uses.)
            await page.locator("#tail tbody tr").nth(19).wait_for(timeout=15_000)

            marker = "Invite teammate " + uuid.uuid4().hex[:6]
            await post(event("team", marker, distinct="new-user"))
            first = page.locator("#tail tbody tr").first
            await first.filter(has_text=marker).wait_for(timeout=15_000)
            text = await first.inner_text()
            assert marker in text and "new-user@example.com" in text and "click" in text

            # Chart drawn (some non-background pixels) and counters refreshed to 25.
            await expect(row.locator("td").nth(1)).to_have_text("25", timeout=15_000)
            drawn = await page.evaluate(
                "(() => { const c = document.getElementById('rate-chart');"
                " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                " let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; })()"
            )
            assert drawn > 100
            assert not errors, errors
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            await browser.close()
    assert SCREENSHOT.stat().st_size > 10_000
