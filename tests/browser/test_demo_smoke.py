"""The demo app in headless Chromium, with no receiver: posthog-js talks to a fake capture host
(Playwright routing) and we check what it would have sent."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from .browser import (
    UI_TIMEOUT_MS,
    FakeCaptureHost,
    chain_text,
    free_port,
    open_demo,
    wait_until,
)

pytestmark = pytest.mark.browser


def _path(event: dict) -> str:
    return urlsplit(event["properties"].get("$current_url", "")).path


def _clicked(text: str, path: str | None = None):
    def check(e: dict) -> bool:
        if e.get("event") != "$autocapture":
            return False
        p = e["properties"]
        if p.get("$event_type") != "click":
            return False
        if chain_text(p.get("$elements_chain", "")) != text:
            return False
        return path is None or _path(e) == path

    return check


def _pageview(path: str):
    return lambda e: e.get("event") == "$pageview" and _path(e) == path


async def test_pages_and_clicks_produce_posthog_events(chromium, demo_app_factory, fake_capture):
    fake: FakeCaptureHost = fake_capture
    app = demo_app_factory(api_host=fake.api_host, token=fake.token, product_id="prod_demo")
    ctx, page = await open_demo(chromium, app.url, "user-smoke", "smoke@example.com", fake)
    try:
        first = await fake.wait_for_event(_pageview("/"), what="$pageview on /")
        session_id = first["properties"]["$session_id"]
        assert session_id
        # the user switcher's ?user=&email= are gone from the URL before posthog-js reads it
        assert first["properties"]["$current_url"] == app.url + "/"

        # Projects: "Add Project"
        await page.click("#nav-projects")
        await fake.wait_for_event(_pageview("/projects"), what="$pageview on /projects")
        await page.wait_for_function("window.demo && window.demo.posthog === true")
        await page.click("text=Add Project")
        await page.wait_for_selector("#project-rows tr:nth-child(4)")
        await fake.wait_for_event(_clicked("Add Project", "/projects"), what="Add Project click")

        # Team: "Invite member" -> modal with email, role dropdown, "Send invite"
        await page.click("#nav-team")
        await fake.wait_for_event(_pageview("/team"), what="$pageview on /team")
        await page.wait_for_function("window.demo && window.demo.posthog === true")
        await page.click("text=Invite member")
        await page.wait_for_selector("#invite-modal:not([hidden])")
        invite = await fake.wait_for_event(_clicked("Invite member", "/team"),
                                           what="Invite member click")
        await page.fill("input[name=email]", "new.hire@example.com")
        await page.click("text=Send invite")  # role left empty: the form says so
        await page.wait_for_selector("#invite-error:not([hidden])")
        assert "role" in (await page.text_content("#invite-error")).lower()
        await page.select_option("select[name=role]", "member")
        await page.click("text=Send invite")
        await page.wait_for_selector("#invite-modal[hidden]", state="attached")
        assert "new.hire@example.com" in await page.text_content("#team-notice")
        await fake.wait_for_event(_clicked("Send invite", "/team"), what="Send invite click")

        # Billing: "Upgrade plan" -> modal -> "Confirm"
        await page.click("#nav-billing")
        await fake.wait_for_event(_pageview("/billing"), what="$pageview on /billing")
        await page.wait_for_function("window.demo && window.demo.posthog === true")
        await page.click("text=Upgrade plan")
        await page.click("#upgrade-modal >> text=Confirm")
        assert await page.text_content("#plan-name") == "Pro"
        await fake.wait_for_event(_clicked("Confirm", "/billing"), what="Confirm click")
    finally:
        await ctx.close()

    assert fake.errors == []
    # The click the issue names, with everything the stream must carry.
    p = invite["properties"]
    assert invite["uuid"]
    assert p["distinct_id"] == "user-smoke"
    assert p["email"] == "smoke@example.com"
    assert p["$session_id"] == session_id
    assert p["$current_url"].startswith(app.url + "/team")
    assert p["$el_text"] == "Invite member"
    assert p["$elements_chain"].startswith("button")
    assert p["token"] == fake.token

    # One session across real page loads, one user throughout.
    captured = fake.events
    assert {e["properties"]["$session_id"] for e in captured} == {session_id}
    assert {e["properties"]["distinct_id"] for e in captured} == {"user-smoke"}
    assert all(e["properties"].get("email") == "smoke@example.com"
               for e in captured if e["event"] in ("$autocapture", "$pageview"))
    assert len({e["uuid"] for e in captured}) == len(captured)

    # identify(userId, {email, product_id}) from the provider snippet
    ident = next(e for e in captured if e["event"] == "$identify")
    assert ident["properties"]["distinct_id"] == "user-smoke"
    assert ident["properties"]["$anon_distinct_id"] != "user-smoke"
    assert ident["$set"] == {"email": "smoke@example.com", "product_id": "prod_demo"}

    # Wire form of posthog-js's default transport (see tests/data/posthog_js_requests).
    posts = [r for r in fake.requests if r.is_capture]
    assert posts and all(r.path == "/e/" for r in posts)
    assert all(r.body[:2] == b"\x1f\x8b" for r in posts)
    assert all(r.headers.get("content-type") == "text/plain" for r in posts)
    # It asked the host for its remote config (the receiver answers it to turn autocapture on).
    assert any(r.path == f"/array/{fake.token}/config" for r in fake.requests)


async def test_two_users_are_kept_apart(chromium, demo_app_factory, fake_capture):
    fake = fake_capture
    app = demo_app_factory(api_host=fake.api_host, token=fake.token)
    users = [("user-alice", "alice@example.com"), ("user-bob", "bob@example.com")]
    contexts = []
    try:
        for uid, email in users:
            ctx, page = await open_demo(chromium, app.url, uid, email, fake)
            contexts.append(ctx)
            await page.click("#nav-team")
            await page.wait_for_function("window.demo && window.demo.posthog === true")
            await page.click("text=Invite member")
        clicks = [
            await fake.wait_for_event(
                lambda e, uid=uid: _clicked("Invite member", "/team")(e)
                and e["properties"]["distinct_id"] == uid,
                what=f"Invite member click by {uid}",
            )
            for uid, _ in users
        ]
    finally:
        for ctx in contexts:
            await ctx.close()
    (a, b) = (c["properties"] for c in clicks)
    assert (a["email"], b["email"]) == ("alice@example.com", "bob@example.com")
    assert a["$session_id"] != b["$session_id"]


async def test_switching_user_in_the_same_tab_starts_clean(chromium, demo_app_factory,
                                                           fake_capture):
    fake = fake_capture
    app = demo_app_factory(api_host=fake.api_host, token=fake.token)
    ctx, page = await open_demo(chromium, app.url, "user-alice", "alice@example.com", fake)
    try:
        first = await fake.wait_for_event(_pageview("/"), what="alice's $pageview")
        await page.select_option("#user-select", "user-bob")
        await page.wait_for_function("window.demo && window.demo.user.id === 'user-bob' "
                                     "&& window.demo.posthog === true")
        await page.click("#nav-billing")
        await page.wait_for_function("window.demo && window.demo.posthog === true")
        await page.click("text=Upgrade plan")
        click = await fake.wait_for_event(_clicked("Upgrade plan", "/billing"),
                                          what="bob's Upgrade plan click")
        assert await page.text_content("#current-user") == "bob@example.com"
    finally:
        await ctx.close()
    p = click["properties"]
    assert (p["distinct_id"], p["email"]) == ("user-bob", "bob@example.com")
    assert p["$session_id"] != first["properties"]["$session_id"]


async def test_chat_widget_loads_only_when_a_rasa_url_is_set(chromium, demo_app_factory,
                                                             fake_capture):
    fake = fake_capture
    app = demo_app_factory(api_host=fake.api_host, token=fake.token)
    ctx, page = await open_demo(chromium, app.url, "user-chat", "chat@example.com", fake)
    try:
        await page.wait_for_load_state("load")
        assert await page.evaluate("document.getElementById('rasa-webchat-script')") is None
        assert await page.evaluate("typeof window.WebChat") == "undefined"

        # A Rasa URL on a closed loopback port: the widget mounts (its launcher stays hidden until
        # the socket connects, which it can't here).
        rasa = f"http://127.0.0.1:{free_port()}"
        await page.goto(f"{app.url}/team?rasa={rasa}")
        await page.wait_for_function("window.demo && window.demo.rasaLoaded === true")
        await page.wait_for_selector("#copilot-widget", state="attached")
        assert await page.evaluate("window.demo.rasaUrl") == rasa
        # kept for the tab (sessionStorage) across page loads, like the user
        await page.click("#nav-projects")
        await page.wait_for_selector("#copilot-widget", state="attached")
        # and ?rasa= with no value turns it off again
        await page.goto(f"{app.url}/?rasa=")
        await page.wait_for_load_state("load")
        assert await page.evaluate("document.getElementById('rasa-webchat-script')") is None
    finally:
        await ctx.close()


async def test_without_a_token_the_app_runs_with_analytics_off(chromium, demo_app_factory):
    app = demo_app_factory()
    ctx = await chromium.new_context()
    ctx.set_default_timeout(UI_TIMEOUT_MS)
    hosts: set[str] = set()
    ctx.on("request", lambda r: hosts.add(urlsplit(r.url).netloc))
    try:
        page = await ctx.new_page()
        await page.goto(f"{app.url}/team")
        await page.wait_for_selector("#analytics-off")
        await page.click("text=Invite member")
        await page.wait_for_selector("#invite-modal:not([hidden])")
    finally:
        await ctx.close()
    assert hosts == {urlsplit(app.url).netloc}


async def test_fake_host_wait_deadline_is_enforced():
    fake = FakeCaptureHost()
    with pytest.raises(AssertionError, match="timed out"):
        await fake.wait_for_event(lambda e: True, timeout=0.2, what="nothing")
    assert await wait_until(lambda: 42, timeout=0.1) == 42
