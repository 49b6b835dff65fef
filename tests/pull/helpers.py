"""Bodies and calls shared by the ingest, live-activity and MCP tests (real receivers, real SDKs)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx


@dataclass(frozen=True)
class Registered:
    """A product registered with autoplay-sdk 0.13.0's body (by analytics project id)."""

    base_url: str
    body: dict[str, Any]

    @property
    def product_id(self) -> str:
        return self.body["product_id"]

    @property
    def ingest_url(self) -> str:
        return self.body["setup"]["ingest_url"]

    @property
    def ingest_secret(self) -> str:
        return self.body["credentials"]["ingest_secret"]

    @property
    def mcp_key(self) -> str:
        return self.body["credentials"]["mcp_key"]

    @property
    def mcp_url(self) -> str:
        return self.body["setup"]["mcp_url"]

    def live(self, user_id: str, *, key: str | None = None, product_id: str | None = None,
             **params: Any) -> httpx.Response:
        return live_activity(self.base_url, product_id or self.product_id, user_id,
                             key if key is not None else self.mcp_key, **params)

    def post(self, body: Any, *, bearer: bool = False) -> httpx.Response:
        headers = ({"Authorization": f"Bearer {self.ingest_secret}"} if bearer
                   else {"x-posthog-secret": self.ingest_secret})
        return httpx.post(self.ingest_url, json=body, headers=headers, timeout=10)


def register_project(base_url: str, provider: str = "posthog", project_id: str | None = None,
                     **extra: Any) -> Registered:
    """POST /products with exactly the body 0.13.0's build_aws_register_payload makes."""
    body = {"provider": provider, "provider_project_id": project_id or str(uuid.uuid4().int)[:8],
            "contact_email": "ops@example.com", **extra}
    r = httpx.post(f"{base_url}/products", json=body, timeout=10)
    assert r.status_code == 201, r.text
    return Registered(base_url, r.json())


def live_activity(base_url: str, product_id: str, user_id: str, key: str | None,
                  **params: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(f"{base_url}/users/{product_id}/{user_id}/live-activity",
                     params=params, headers=headers, timeout=10)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


def hog(event: str = "$autocapture", *, user: str, session: str, url: str, text: str = "",
        ts: float | None = None, **extra: Any) -> dict[str, Any]:
    """A body as the Hog destination (0.7.2 tutorial's and 0.13.0's script) posts it."""
    chain = (f'button.btn:attr__id="b1"nth-child="1"nth-of-type="1"text="{text}";body:nth-child="1"'
             if text else "")
    return {
        "event": event, "referrer": "", "email": f"{user}@example.com",
        "timestamp": iso(ts if ts is not None else time.time()),
        "element_id": "", "event_type": "click" if event == "$autocapture" else "",
        "session_id": session, "current_url": url, "distinct_id": user,
        "elements_chain": chain, "input_field_name": "", "link_destination": "",
        "button_or_link_text": text, "uuid": str(uuid.uuid4()), **extra,
    }


def posthog_batch_element(*, user: str, session: str, url: str, text: str,
                          ts: float | None = None) -> dict[str, Any]:
    """One element of the hosted connector's load test body (tests/stress_test_sdk.py)."""
    return {
        "event": "$autocapture",
        "timestamp": iso(ts if ts is not None else time.time()),
        "distinct_id": user,
        "properties": {
            "$event_type": "click", "$current_url": url, "$session_id": session,
            "$button_text": text,
            "$elements_chain": f'button:nth-child="1"nth-of-type="1"text="{text}"',
        },
    }


def amplitude(event_type: str, *, user: str, device: str = "dev-1", session: int = 1767225600000,
              url: str, text: str = "", tag: str = "button", ts_ms: int | None = None,
              kind: str = "click", **props: Any) -> dict[str, Any]:
    """One event as autoplay-sdk 0.13.0's Freemarker template renders it."""
    return {
        "event_type": event_type,
        "user_id": user,
        "device_id": device,
        "session_id": session,
        "time": ts_ms if ts_ms is not None else int(time.time() * 1000),
        "event_time": "",
        "user_properties": {"email": f"{user}@example.com", "plan": "trial"},
        "event_properties": {
            "[Amplitude] Page URL": url, "[Amplitude] Page Title": "App",
            "$event_type": kind, "$current_url": url, "$button_text": text,
            "$elements_chain": f"div#app > {tag}.btn-primary", "$element_id": "",
            "$element_tag": tag, **props,
        },
    }
