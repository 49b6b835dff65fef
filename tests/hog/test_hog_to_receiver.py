"""Both Hog scripts, run on realistic PostHog events, posting for real to a live receiver.

For every event of ``tests/data/posthog_events.json`` (one per chain of the corpus, plus a
pageview, a custom event and an anonymous click) the script's single ``fetch`` is sent to the
receiver over HTTP. We then check what was stored (element text, id, tag, link) and what the
stock SDK receives on the stream (title, description). The receiver parses element 0 of the raw
``elements_chain`` itself, so even the tutorial's script ends up stored correctly — while the
hint fields it computed, shown here per case, are wrong on most real chains.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import httpx
from autoplay_sdk import ActionsPayload, AsyncConnectorClient

from tests.hog.hogdata import destination_source, load_chains, load_events, tutorial_source
from tests.hog.hogvm import FetchRequest, response_from_http, run_script

# (element_tag, element_id, element_text, link_target, title, description) per event.
EXPECTED: dict[str, tuple[Any, ...]] = {
    "button_in_form": (
        "button",
        "save",
        "Save",
        None,
        "Click Save button",
        "User clicked Save button on the profile page",
    ),
    "nav_link": (
        "a",
        None,
        "Billing",
        "/settings/billing",
        "Click Billing link",
        "User clicked Billing link on the settings page",
    ),
    "mui_span_in_button": (
        "span",
        None,
        "Invite member",
        None,
        "Click Invite member button",
        "User clicked Invite member button on the team page",
    ),
    "input_change": (
        "input",
        None,
        None,
        None,
        "Change email field",
        "User typed into email field on the invite page",
    ),
    "escaped_quotes": (
        "button",
        "greet",
        'Say "hi" to Bob',
        None,
        'Click Say "hi" to Bob button',
        'User clicked Say "hi" to Bob button on the home page',
    ),
    "data_context_attribute": (
        "button",
        None,
        "Delete",
        None,
        "Click Delete button",
        "User clicked Delete button on the projects page",
    ),
    "form_submit": (
        "form",
        "login",
        None,
        None,
        "Submit login form",
        "User submitted login form on the login page",
    ),
    "href_with_semicolon_and_quotes": (
        "a",
        None,
        "Docs; API: v2",
        'https://docs.example.com/a;b?x="1"',
        "Click Docs; API: v2 link",
        "User clicked Docs; API: v2 link on the help page",
    ),
    "tailwind_trailing_backslash": (
        "button",
        None,
        "Path C:\\",
        None,
        "Click Path C:\\ button",
        "User clicked Path C:\\ button on the files page",
    ),
    "svg_path_in_icon_button": (
        "path",
        None,
        "Close dialog",
        None,
        "Click Close dialog button",
        "User clicked Close dialog button on the q3 page",
    ),
    "data_tooltip_text": (
        "button",
        "export-csv",
        "Export",
        None,
        "Click Export button",
        "User clicked Export button on the reports page",
    ),
    "nested_spans_role_button": (
        "span",
        None,
        "Acme Corp",
        None,
        "Click Acme Corp button",
        "User clicked Acme Corp button on the dashboard page",
    ),
    "span_in_link": (
        "span",
        None,
        "Getting started",
        "/docs/getting-started",
        "Click Getting started link",
        "User clicked Getting started link on the docs page",
    ),
    "input_type_submit": (
        "input",
        None,
        "Sign in",
        None,
        "Click Sign in button",
        "User clicked Sign in button on the login page",
    ),
    "select_country": (
        "select",
        "country",
        None,
        None,
        "Change country dropdown",
        "User changed the selection in country dropdown on the checkout page",
    ),
    "tailwind_classes_with_dots": (
        "button",
        None,
        "New project",
        None,
        "Click New project button",
        "User clicked New project button on the projects page",
    ),
    "mui_invite_member_button": (
        "button",
        ":r1f:",
        "Invite member",
        None,
        "Click Invite member button",
        "User clicked Invite member button on the team page",
    ),
    "role_select": (
        "select",
        None,
        "Member role",
        None,
        "Change Member role dropdown",
        "User changed the selection in Member role dropdown on the members page",
    ),
    "button_in_link": (
        "button",
        None,
        "Open",
        "/projects/42",
        "Click Open button",
        "User clicked Open button on the projects page",
    ),
    "label_click": (
        "label",
        None,
        "Remember me",
        None,
        "Click Remember me label",
        "User clicked Remember me label on the login page",
    ),
    "pointer_div_card": (
        "div",
        None,
        "Q3 revenue",
        None,
        "Click Q3 revenue",
        "User clicked Q3 revenue on the reports page",
    ),
    "checkbox_input": (
        "input",
        "remember",
        None,
        None,
        "Click remember field",
        "User clicked remember field on the login page",
    ),
    "pageview": (None, None, None, None, "Page Load: Dashboard", "User landed on the Dashboard page"),
    "custom_null_chain": (
        None,
        None,
        None,
        None,
        "invite_sent",
        "User triggered invite_sent on the team page",
    ),
    "anonymous_click": (
        "a",
        None,
        "Start free trial",
        "/signup",
        "Click Start free trial link",
        "User clicked Start free trial link on the pricing page",
    ),
    "identified_without_email_property": (
        "a",
        None,
        "Billing",
        "/settings/billing",
        "Click Billing link",
        "User clicked Billing link on the billing page",
    ),
}


def _sender(http: httpx.Client) -> Any:
    def fetch(request: FetchRequest) -> Any:
        r = http.request(request.method, request.url, headers=request.headers, content=request.body)
        return response_from_http(r.status_code, r.text)

    return fetch


def _post_all(source: str, product: Any) -> list[tuple[str, FetchRequest]]:
    sent = []
    with httpx.Client(timeout=10) as http:
        for event in load_events():
            globals_ = event["globals"]
            globals_["inputs"] = {
                "url": product.webhook_url,
                "headers": {"x-posthog-secret": product.webhook_secret},
            }
            execution = run_script(source, globals_, fetch=_sender(http))
            assert execution.error is None, (event["name"], execution.error)
            sent.append((event["name"], execution.request))
    return sent


async def _stored(database_url: str, product_id: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        return await conn.fetch(
            "SELECT element_tag, element_id, element_text, link_target, title, description, "
            "event_uuid, dedup_key FROM events WHERE product_id = $1 ORDER BY position",
            product_id,
        )
    finally:
        await conn.close()


async def test_our_destination_end_to_end(receiver, make_product, database_url) -> None:  # type: ignore[no-untyped-def]
    product = make_product()
    got: list[ActionsPayload] = []
    connected, all_in = asyncio.Event(), asyncio.Event()

    def on_actions(payload: ActionsPayload) -> None:
        got.append(payload)
        if len(got) == len(EXPECTED):
            all_in.set()

    client = AsyncConnectorClient(url=product.stream_url, token=product.stream_key, on_connect=connected.set)
    client.on_actions(on_actions)
    task = client.run_in_background()
    try:
        await asyncio.wait_for(connected.wait(), 10)
        sent = await asyncio.to_thread(_post_all, destination_source(), product)
        await asyncio.wait_for(all_in.wait(), 20)
    finally:
        client.stop()
        task.cancel()

    rows = await _stored(database_url, product.product_id)
    assert len(rows) == len(sent) == len(EXPECTED)
    wrong = []
    for (name, request), row, frame in zip(sent, rows, got, strict=True):
        body = json.loads(request.body)
        assert body["uuid"] and str(row["event_uuid"]) == body["uuid"], name  # dedup by uuid
        *_element, title, description = EXPECTED[name]
        actual = (
            row["element_tag"],
            row["element_id"],
            row["element_text"],
            row["link_target"],
            frame.actions[0].title,
            frame.actions[0].description,
        )
        if actual != EXPECTED[name]:
            wrong.append((name, actual))
        assert (row["title"], row["description"]) == (title, description), name
    assert wrong == []

    # A redelivery (PostHog retries) is a duplicate: no new row.
    with httpx.Client() as http:
        _name, first = sent[0]
        r = http.post(first.url, headers=first.headers, content=first.body)
        assert r.json()["duplicate"] is True


async def test_tutorial_script_hints_are_wrong_but_the_receiver_is_right(  # type: ignore[no-untyped-def]
    receiver, make_product, database_url
) -> None:
    product = make_product()
    sent = await asyncio.to_thread(_post_all, tutorial_source(), product)
    rows = await _stored(database_url, product.product_id)
    chains = load_chains()
    wrong_hints = {}
    for (name, request), row in zip(sent, rows, strict=True):
        body = json.loads(request.body)
        assert "uuid" not in body  # the tutorial sends none: dedup falls back to a payload hash
        assert row["dedup_key"].startswith("h:")
        # Stored from element 0 of the chain, whatever the hints say.
        assert (row["element_tag"], row["element_id"], row["element_text"], row["link_target"]) == (
            EXPECTED[name][:4]
        ), name
        case = chains.get(next(e for e in load_events() if e["name"] == name)["chain_case"] or "")
        if case:
            expected = case["expected"]
            hints = (body["element_id"] or None, body["button_or_link_text"] or None)
            if hints != (expected["element_id"], expected["text"]):
                wrong_hints[name] = hints
    # Where the tutorial's extraction goes wrong (posthog.md §1.5): ancestor ids, truncated
    # text at escaped quotes, `text="` matched inside another attribute, …
    assert wrong_hints["nav_link"][0] == "sidebar"
    assert wrong_hints["mui_span_in_button"][0] == "team-page"
    assert wrong_hints["escaped_quotes"][1] == "Say \\"
    assert wrong_hints["data_context_attribute"][1] == "row-menu"
    assert len(wrong_hints) >= 10, sorted(wrong_hints)
    print(
        f"\ntutorial script: wrong hints on {len(wrong_hints)} of {len(chains)} chains; "
        "stored values correct on all"
    )
