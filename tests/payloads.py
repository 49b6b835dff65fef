"""Realistic bodies as the tutorial's Hog destination script sends them."""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

INVITE_CHAIN = (
    'span:nth-child="2"nth-of-type="1"text="Invite member";'
    'button.MuiButton-contained.MuiButton-root:attr__class="MuiButton-root MuiButton-contained"'
    'attr__data-testid="invite-btn"attr__type="button"nth-child="1"nth-of-type="1"text="Invite member";'
    'div.toolbar:attr__class="toolbar"attr__id="team-page"attr_id="team-page"nth-child="2"nth-of-type="2";'
    'body:nth-child="2"nth-of-type="1"'
)


def hog_payload(**overrides: Any) -> dict[str, Any]:
    """The tutorial's flat payload (its four extracted hint fields as its script computes them)."""
    body: dict[str, Any] = {
        "event": "$autocapture",
        "referrer": "$direct",
        "timestamp": "2026-11-26T10:15:30.123Z",
        "element_id": "team-page",
        "event_type": "click",
        "session_id": "0193f0c2-7d1e-7a44-9c1b-5f2e8a9d0b11",
        "current_url": "https://app.example.com/team?tab=members",
        "distinct_id": "user-42",
        "email": "jane.doe@example.com",
        "elements_chain": INVITE_CHAIN,
        "input_field_name": "",
        "link_destination": "",
        "button_or_link_text": "Invite member",
    }
    body.update(overrides)
    return body


def unique(**overrides: Any) -> dict[str, Any]:
    """A payload that is never a duplicate of another (fresh uuid)."""
    return hog_payload(uuid=str(uuidlib.uuid4()), **overrides)


def pageview(**overrides: Any) -> dict[str, Any]:
    return hog_payload(
        event="$pageview", event_type="", elements_chain="", element_id="",
        button_or_link_text="", uuid=str(uuidlib.uuid4()), **overrides,
    )
