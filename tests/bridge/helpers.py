"""Helpers shared by the bridge and Rasa tests: a live bridge, Hog payloads, polling.

Import as ``from tests.bridge.helpers import ...`` (the repository root is on ``sys.path``
under ``python -m pytest``; the conftests make sure of it otherwise).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx

from bridge import BridgeSettings, create_app
from tests.fakes.llm import FakeLLM, UvicornThread

# What the Rasa action sends the bridge as "Authorization: Bearer" (BRIDGE_REPLY_TOKEN).
REPLY_TOKEN = "bridge-reply-token-for-tests-0123"
REPLY_AUTH = {"Authorization": f"Bearer {REPLY_TOKEN}"}

T = TypeVar("T")


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float = 15.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last={last!r})")
        time.sleep(interval)


# --------------------------------------------------------------------------- the event source


@dataclass(frozen=True)
class Product:
    """A product on the receiver: what the webhook and the stream need."""

    receiver_url: str
    product_id: str
    webhook_secret: str
    stream_key: str
    mcp_key: str = ""  # what a pull-mode bridge reads live activity with

    @property
    def stream_url(self) -> str:
        return f"{self.receiver_url}/stream/{self.product_id}"

    def post_events(self, *events: dict[str, Any]) -> None:
        """POST each Hog payload to the webhook; the receiver answers 200 after commit."""
        with httpx.Client(timeout=10.0) as client:
            for event in events:
                resp = client.post(
                    f"{self.receiver_url}/webhook/{self.product_id}",
                    json=event,
                    headers={"x-posthog-secret": self.webhook_secret},
                )
                assert resp.status_code == 200, (resp.status_code, resp.text)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


def hog_click(
    *,
    user_id: str,
    email: str,
    session_id: str,
    text: str,
    page_url: str,
    element: str = "button",
    element_id: str = "",
    ts: float | None = None,
) -> dict[str, Any]:
    """A click as the tutorial's Hog destination forwards it (Step 3 payload keys)."""
    ts = time.time() if ts is None else ts
    attrs = f'attr__id="{element_id}"' if element_id else ""
    chain = (
        f'{element}.btn:{attrs}nth-child="1"nth-of-type="1"text="{text}";'
        'div.toolbar:nth-child="2"nth-of-type="1";body:nth-child="1"nth-of-type="1"'
    )
    return {
        "event": "$autocapture",
        "referrer": "",
        "timestamp": _iso(ts),
        "element_id": element_id,
        "event_type": "click",
        "session_id": session_id,
        "current_url": page_url,
        "distinct_id": user_id,
        "email": email,
        "elements_chain": chain,
        "input_field_name": "",
        "link_destination": "",
        "button_or_link_text": text,
        "uuid": str(uuid.uuid4()),
        "$el_text": text,
    }


def hog_pageview(
    *, user_id: str, email: str, session_id: str, page_url: str, ts: float | None = None
) -> dict[str, Any]:
    ts = time.time() if ts is None else ts
    return {
        "event": "$pageview",
        "referrer": "",
        "timestamp": _iso(ts),
        "element_id": "",
        "event_type": "",
        "session_id": session_id,
        "current_url": page_url,
        "distinct_id": user_id,
        "email": email,
        "elements_chain": "",
        "input_field_name": "",
        "link_destination": "",
        "button_or_link_text": "",
        "uuid": str(uuid.uuid4()),
    }


# --------------------------------------------------------------------------- a live bridge


class LiveBridge:
    """A real bridge app served by uvicorn on 127.0.0.1:<free port> in a thread."""

    def __init__(self, settings: BridgeSettings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        self._server = UvicornThread(self.app, name="bridge")
        self.url = self._server.url
        self._client = httpx.Client(base_url=self.url, timeout=30.0)

    def start(self) -> LiveBridge:
        self._server.start()
        return self

    def stop(self) -> None:
        self._client.close()
        self._server.stop()

    def healthz(self) -> dict[str, Any]:
        resp = self._client.get("/healthz")
        resp.raise_for_status()
        return resp.json()

    def reply(self, user_id: str, query: str) -> dict[str, Any]:
        resp = self._client.get(f"/reply/{user_id}", params={"query": query}, headers=REPLY_AUTH)
        assert resp.status_code == 200, (resp.status_code, resp.text)
        return resp.json()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the bridge can answer with activity: its stream is open (pull mode: at once)."""
        if self.settings.mode == "stream":
            self.wait_connected(timeout)

    def wait_delivered(self, before: int, n: int, timeout: float = 30.0) -> None:
        """Until ``n`` more events than ``before`` reached the bridge's context.

        In pull mode there is nothing to wait for: the receiver answered 200 after the commit,
        and every reply reads the committed events.
        """
        if self.settings.mode == "stream":
            self.wait_events(before + n, timeout)

    def events_seen(self) -> int:
        return int(self.healthz().get("events_received", 0))

    def wait_connected(self, timeout: float = 30.0) -> None:
        wait_for(
            lambda: self.healthz()["stream_connected"], timeout=timeout, what="stream connect"
        )

    def wait_events(self, n: int, timeout: float = 30.0) -> dict[str, Any]:
        """Until the bridge has ingested at least ``n`` distinct frames."""
        return wait_for(
            lambda: (h := self.healthz())["events_received"] >= n and h,
            timeout=timeout,
            what=f"{n} events in the bridge",
        )


def bridge_settings(
    product: Product | None, llm: FakeLLM, *, stream_url: str | None = None, **overrides: Any
) -> BridgeSettings:
    """Settings for a test bridge: the product's stream and the fake LLM, no retries."""
    values: dict[str, Any] = {
        "stream_url": stream_url or (product.stream_url if product else ""),
        "stream_token": product.stream_key if product else "",
        # Used by pull mode (mode="pull") only.
        "activity_url": product.receiver_url if product else None,
        "product_id": product.product_id if product else None,
        "mcp_key": product.mcp_key if product else "",
        "llm_base_url": llm.base_url,
        "llm_api_key": "test-key",
        "llm_model": "fake-model",
        # Error-path tests must not wait for the openai client's retry backoff.
        "llm_max_retries": 0,
        "llm_timeout_s": 10.0,
        "reply_token": REPLY_TOKEN,
    }
    values.update(overrides)
    return BridgeSettings(**values)


# The `start_bridge` fixture's signature: start_bridge(product, **settings_overrides).
StartBridge = Callable[..., LiveBridge]
