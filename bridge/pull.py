"""Pull mode (``BRIDGE_MODE=pull``): the user's live activity read over REST on every reply.

autoplay-sdk 0.13.0's Rasa recipe (``skills/chatbot-rasa/SKILL.md``): "a small FastAPI bridge pulls a
user's live activity on demand over REST and exposes it over its own ``/reply/{user_id}`` endpoint
… no webhook, no stream, no local event store to keep in sync". Each reply makes one
``GET {activity_url}/users/{product_id}/{user_id}/live-activity?limit=&since_seconds=`` with
``Authorization: Bearer <mcp_key>`` and formats the actions exactly as the stream mode's context
store does (``Recent activity:`` then ``n. [index] type: description — canonical_url``), so the
prompt reads the same in both modes.

Anything but a 200 (a wrong key, the receiver down, a timeout) means "no context": the reply is
still answered, and the cause is logged (never the key).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import httpx
from autoplay_sdk import SlimAction

from bridge.settings import BridgeSettings

log = logging.getLogger("bridge.pull")


class ActivityReader:
    """Reads one user's recent actions from the receiver (or the hosted connector)."""

    def __init__(self, settings: BridgeSettings) -> None:
        assert settings.activity_url and settings.product_id  # checked by BridgeSettings
        self.settings = settings
        self._client = httpx.AsyncClient(
            base_url=settings.activity_url,
            timeout=settings.activity_timeout_s,
            headers={"Authorization": f"Bearer {settings.mcp_key.get_secret_value()}"},
        )
        self.pulls = 0
        self.failures = 0
        self.last_status: int | None = None

    async def aclose(self) -> None:
        await self._client.aclose()

    async def actions(self, user_id: str) -> list[dict[str, Any]]:
        """The user's recent actions, oldest first; [] when they cannot be read."""
        self.pulls += 1
        path = (
            f"/users/{quote(self.settings.product_id or '', safe='')}"
            f"/{quote(user_id, safe='')}/live-activity"
        )
        params = {"limit": self.settings.max_actions, "since_seconds": self.settings.lookback_seconds}
        try:
            resp = await self._client.get(path, params=params)
        except httpx.HTTPError as exc:
            self.failures += 1
            self.last_status = None
            log.warning("live activity unreachable for user=%s: %s", user_id, type(exc).__name__)
            return []
        self.last_status = resp.status_code
        if resp.status_code != 200:
            self.failures += 1
            log.warning(
                "live activity answered %d for user=%s: %s",
                resp.status_code, user_id, resp.text[:200],
            )
            return []
        data = resp.json()
        actions = data.get("actions") if isinstance(data, dict) else None
        return [a for a in actions if isinstance(a, dict)] if isinstance(actions, list) else []

    def stats(self) -> dict[str, Any]:
        return {
            "mode": "pull",
            "pulls": self.pulls,
            "pull_failures": self.failures,
            "last_status": self.last_status,
        }


def activity_text(actions: list[dict[str, Any]]) -> str:
    """The stream mode's context text (``AsyncContextStore.get``) for the same actions."""
    if not actions:
        return ""
    lines = [f"{n}. {SlimAction.from_dict(a).to_text()}" for n, a in enumerate(actions, 1)]
    return "Recent activity:\n" + "\n".join(lines)


def email_of(actions: list[dict[str, Any]]) -> str | None:
    """The newest email the actions carry (the bridge greets the user by it)."""
    for action in reversed(actions):
        email = action.get("email")
        if isinstance(email, str) and email:
            return email
    return None
