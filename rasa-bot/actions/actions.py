"""Rasa custom actions: a thin HTTP wrapper around the bridge.

The bridge owns the autoplay-sdk pipeline and the LLM; an action only finds out which user is
chatting, calls ``GET {BRIDGE_URL}/reply/{user_id}?query=<text>`` and utters the reply. No SDK
import, no LLM key, no context here, so Rasa (Python 3.10, pydantic v1) stays independent of
the bridge (Python 3.11, pydantic v2).

Environment (read per call, so tests and a running server pick up changes):
  BRIDGE_URL          default http://localhost:8090 (docker-compose sets http://bridge:8090)
  BRIDGE_TIMEOUT_S    default 12
  BRIDGE_REPLY_TOKEN  sent as "Authorization: Bearer <token>"; the bridge refuses /reply without
                      it (the same value as the bridge's BRIDGE_REPLY_TOKEN)
"""

from __future__ import annotations

import logging
import os
from typing import Any
from urllib.parse import quote

import httpx
from rasa_sdk import Action, Tracker
from rasa_sdk.executor import CollectingDispatcher

log = logging.getLogger(__name__)

DEFAULT_BRIDGE_URL = "http://localhost:8090"


def _bridge_url() -> str:
    return os.environ.get("BRIDGE_URL", DEFAULT_BRIDGE_URL).rstrip("/")


def _timeout_s() -> float:
    try:
        return float(os.environ.get("BRIDGE_TIMEOUT_S", "12"))
    except ValueError:
        return 12.0


def _user_id_from(metadata: Any) -> str | None:
    """``userId`` from either metadata shape Rasa delivers.

    * socketio with ``metadata_key: customData``: the widget's customData object itself,
      e.g. ``{"language": "en", "userId": "u-1"}``;
    * REST: the request's metadata verbatim, e.g. ``{"customData": {"userId": "u-1"}}``.
    """
    if not isinstance(metadata, dict):
        return None
    direct = metadata.get("userId")
    if isinstance(direct, (str, int)) and str(direct):
        return str(direct)
    custom = metadata.get("customData")
    if isinstance(custom, dict):
        nested = custom.get("userId")
        if isinstance(nested, (str, int)) and str(nested):
            return str(nested)
    return None


def user_id(tracker: Tracker) -> str:
    """The app's user id (== posthog.identify id), falling back to the Rasa sender id."""
    latest = tracker.latest_message or {}
    found = _user_id_from(latest.get("metadata"))
    if found is None:
        # Rasa copies the first message's metadata into this slot; it still names the user
        # when a later message arrives without metadata.
        found = _user_id_from(tracker.get_slot("session_started_metadata"))
    return found or tracker.sender_id or "anonymous"


def user_text(tracker: Tracker) -> str:
    return (tracker.latest_message or {}).get("text") or ""


def _auth_headers() -> dict[str, str]:
    token = os.environ.get("BRIDGE_REPLY_TOKEN", "").strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


async def ask_bridge(uid: str, query: str) -> dict[str, Any]:
    url = f"{_bridge_url()}/reply/{quote(uid, safe='')}"
    async with httpx.AsyncClient(timeout=_timeout_s()) as client:
        resp = await client.get(url, params={"query": query}, headers=_auth_headers())
        resp.raise_for_status()
        data = resp.json()
    return data if isinstance(data, dict) else {}


async def reply_via_bridge(
    dispatcher: CollectingDispatcher, tracker: Tracker, fallback: str
) -> None:
    uid = user_id(tracker)
    try:
        data = await ask_bridge(uid, user_text(tracker))
        text = data.get("reply") or fallback
    except Exception as exc:  # the chat must always get an answer
        log.warning("bridge call failed for user=%s: %s", uid, exc)
        text = fallback
    dispatcher.utter_message(text=text)


class ActionAskLLM(Action):
    def name(self) -> str:
        return "action_ask_llm"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        await reply_via_bridge(
            dispatcher,
            tracker,
            "I'm not sure I caught that. Try asking what you just did, or for help.",
        )
        return []


class ActionRecentActivity(Action):
    def name(self) -> str:
        return "action_recent_activity"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        await reply_via_bridge(
            dispatcher,
            tracker,
            "I haven't seen activity in the last few minutes. Click around and ask again.",
        )
        return []


class ActionHelpCurrentPage(Action):
    def name(self) -> str:
        return "action_help_current_page"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        await reply_via_bridge(
            dispatcher,
            tracker,
            "I don't know what page you're on yet. Click anywhere and ask again.",
        )
        return []
