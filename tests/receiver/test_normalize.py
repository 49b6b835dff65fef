"""The pure normalizer: canonical URLs, page names, titles and descriptions, timestamps."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from receiver.errors import BadRequestError
from receiver.ingest import normalize
from tests.payloads import hog_payload

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        ("https://app.example.com/settings/billing?tab=plans#x", "https://app.example.com/settings/billing"),
        ("https://APP.example.com:443/projects/12345/edit", "https://app.example.com/projects/:id/edit"),
        (
            "https://app.example.com/sessions/019d8528-1b2c-7d3e-8f90-a1b2c3d4e5f6?mode=",
            "https://app.example.com/sessions/:id",
        ),
        ("https://app.example.com/items/5f2e8a9d0b11", "https://app.example.com/items/:id"),
        ("https://app.example.com/invite/Xk9fQ2mP7rT4vL8wZ3", "https://app.example.com/invite/:id"),
        ("https://app.example.com/", "https://app.example.com/"),
        ("https://app.example.com/team/facade", "https://app.example.com/team/facade"),
        ("http://localhost:8080/team", "http://localhost:8080/team"),
    ],
)
def test_canonical_url(url: str, canonical: str) -> None:
    assert normalize.canonical_url(url) == canonical


@pytest.mark.parametrize(
    ("canonical", "page"),
    [
        ("https://a.example/settings/billing", "Billing"),
        ("https://a.example/projects/:id", "Projects"),
        ("https://a.example/", "Home"),
        ("https://a.example/team-members.html", "Team Members"),
    ],
)
def test_page_name(canonical: str, page: str) -> None:
    assert normalize.page_name(canonical) == page


@pytest.mark.parametrize(
    ("overrides", "title", "description"),
    [
        ({}, "Click Invite member button", "User clicked Invite member button on the team page"),
        (
            {
                "event": "$pageview",
                "event_type": "",
                "elements_chain": "",
                "current_url": "https://app.example.com/settings/billing",
            },
            "Page Load: Billing",
            "User landed on the Billing page",
        ),
        (
            {
                "elements_chain": 'a.nav-link:attr__href="/settings/billing"href="/settings/billing"'
                'nth-child="1"nth-of-type="1"text="Billing";body:nth-child="2"nth-of-type="1"',
                "current_url": "https://app.example.com/dashboard",
            },
            "Click Billing link",
            "User clicked Billing link on the dashboard page",
        ),
        (
            {
                "event_type": "submit",
                "elements_chain": 'form:attr__id="invite-form"attr_id="invite-form"'
                'nth-child="1"nth-of-type="1";body:nth-child="2"nth-of-type="1"',
            },
            "Submit invite-form form",
            "User submitted invite-form form on the team page",
        ),
        (
            {
                "event_type": "change",
                "elements_chain": 'select:attr__name="role"nth-child="1"'
                'nth-of-type="1";form:nth-child="1"nth-of-type="1";body:nth-child="2"nth-of-type="1"',
            },
            "Change role dropdown",
            "User changed the selection in role dropdown on the team page",
        ),
        (
            {
                "elements_chain": 'div:nth-child="1"nth-of-type="1";body:nth-child="2"nth-of-type="1"',
                "button_or_link_text": "",
                "current_url": "https://app.example.com/pricing",
            },
            "Click element",
            "User clicked element on the pricing page",
        ),
        (
            {"event": "$rageclick"},
            "Rage click Invite member button",
            "User rage-clicked Invite member button on the team page",
        ),
        (
            {"event": "invite_sent", "event_type": ""},
            "invite_sent",
            "User triggered invite_sent on the team page",
        ),
    ],
)
def test_titles_and_descriptions(overrides: dict, title: str, description: str) -> None:
    event = normalize.from_webhook(hog_payload(**overrides), received_at=NOW)
    assert (event.title, event.description) == (title, description)


def test_tutorial_hints_are_only_a_fallback_without_a_chain() -> None:
    with_chain = normalize.from_webhook(hog_payload(), received_at=NOW)
    assert with_chain.element_id is None  # the hint "team-page" is the ancestor's id
    no_chain = normalize.from_webhook(
        hog_payload(elements_chain="", element_id="save", button_or_link_text="Save"), received_at=NOW
    )
    assert (no_chain.element_id, no_chain.element_text) == ("save", "Save")
    assert no_chain.title == "Click Save"


def test_timestamps_are_parsed_liberally_and_clamped() -> None:
    def occurred(ts: object) -> datetime:
        return normalize.from_webhook(hog_payload(timestamp=ts), received_at=NOW).occurred_at

    assert occurred("2026-11-26T10:15:30.123456+00:00") == datetime(
        2026, 11, 26, 10, 15, 30, 123456, tzinfo=UTC
    )
    assert occurred("2026-11-26 10:15:30") == datetime(2026, 11, 26, 10, 15, 30, tzinfo=UTC)
    assert occurred(1795688130000) == datetime.fromtimestamp(1795688130, tz=UTC)
    assert occurred("not a date") == NOW
    assert occurred("2027-01-01T00:00:00Z") == NOW  # more than 23 h in the future
    assert occurred(None) == NOW


def test_internal_events_are_stored_but_not_streamed() -> None:
    event = normalize.from_webhook(hog_payload(event="$identify", event_type=""), received_at=NOW)
    assert event.action_type == "internal"
    assert not normalize.is_streamed(event.action_type)
    assert normalize.is_streamed("click") and normalize.is_streamed("pageview")


def test_dedup_key_prefers_uuid() -> None:
    a = normalize.from_webhook(hog_payload(uuid="0193F0C2-0000-7000-8000-000000000001"), received_at=NOW)
    assert a.dedup_key == "u:0193f0c2-0000-7000-8000-000000000001"
    b = normalize.from_webhook(hog_payload(), received_at=NOW)
    c = normalize.from_webhook(hog_payload(), received_at=NOW)
    assert b.dedup_key == c.dedup_key and b.dedup_key.startswith("h:")


def test_nul_characters_are_made_storable() -> None:
    event = normalize.from_webhook(hog_payload(button_or_link_text="a\x00b", extra="x\x00y"), received_at=NOW)
    assert event.payload["extra"] == "x\ufffdy"


def test_control_characters_in_ids_are_rejected() -> None:
    with pytest.raises(BadRequestError, match="session_id"):
        normalize.from_webhook(hog_payload(session_id="a\x07b"), received_at=NOW)
    with pytest.raises(BadRequestError, match="distinct_id"):
        normalize.from_webhook(hog_payload(distinct_id="x" * 500), received_at=NOW)
