"""Tier 3 fixtures: the Tier 2 stack plus what a browser needs on top of it.

``rasa_stack`` is the Tier 2 session fixture from ``tests/rasa/test_real_rasa.py``, reused as is:
``receiver serve`` on a throwaway database, a live bridge on the product's stream, the real
action server (rasa-sdk 3.6.2) and ``rasa run`` (REST + socketio, ``--cors "*"``), the fake
OpenAI-compatible LLM; everything on 127.0.0.1, stopped at the end of the session. Import the
names below into the test module (``from .chat_stack import ...``).

pytest keeps one instance per fixture definition, so a test module that imports ``rasa_stack``
gets its own stack (and its own fake LLM, ``fake_llm_server``), even when tests/rasa runs in the
same session. It also works when tests/browser is run on its own (tests/rasa/conftest.py, which
registers the fake LLM as a plugin, is not loaded then).

``chat_loop`` adds the demo app: posthog-js sends to the stack's receiver with the product's
capture token. Open it with ``?rasa=<ChatLoop.rasa_url>`` and every page of that tab loads the
rasa-webchat widget against the stack's Rasa.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.bridge.helpers import wait_for
from tests.fakes.llm import FakeLLM, fake_llm_server  # noqa: F401  (fixture)
from tests.rasa.test_real_rasa import RasaStack, rasa_stack  # noqa: F401  (fixture)

from .browser import chromium_path, load_serve_module


def missing_for_chat_loop() -> str | None:
    """Why the Tier 3 tests cannot run here (checked before the ~30 s Rasa start), or None."""
    from tests.rasa.rasa_env import rasa_model_missing

    if chromium_path() is None:
        return "Debian chromium is not installed: run scripts/browser-deps.sh (as root)"
    serve = load_serve_module()
    try:
        serve.check_assets()
    except serve.MissingAssets as exc:
        return str(exc)
    return rasa_model_missing()


def capture_token(stack: RasaStack) -> str:
    """The stack's product capture token (what posthog-js sends as its project key).

    ``RasaStack`` keeps only what the webhook and the stream need, and the receiver returns the
    capture token only in registration answers. So: re-register with ``force_reregister`` and the
    same webhook secret. The capture token never changes; the new stream key is not used and
    the bridge's key stays valid for the receiver's grace period (24 h by default), so its live
    stream is not disturbed. The caller checks that the bridge did not reconnect.
    """
    resp = httpx.post(
        f"{stack.product.receiver_url}/products",
        json={
            "product_id": stack.product.product_id,
            "contact_email": "ops@example.com",
            "webhook_secret": stack.product.webhook_secret,
            "force_reregister": True,
        },
        timeout=10,
    )
    assert resp.status_code == 201, resp.text
    return str(resp.json()["capture_token"])


@dataclass
class ChatLoop:
    stack: RasaStack
    app_url: str  # the demo app, posthog-js -> the stack's receiver
    capture_token: str

    @property
    def llm(self) -> FakeLLM:
        return self.stack.llm

    @property
    def rasa_url(self) -> str:
        return self.stack.rasa_url

    @property
    def bridge_url(self) -> str:
        return self.stack.bridge.url


@pytest.fixture
def chat_loop(rasa_stack: RasaStack, demo_app_factory: Callable[..., Any]) -> ChatLoop:  # noqa: F811
    stack = rasa_stack
    connects = stack.bridge.healthz()["stream_connects"]
    token = capture_token(stack)
    app = demo_app_factory(
        api_host=stack.product.receiver_url,
        token=token,
        product_id=stack.product.product_id,
    )
    # Re-registering must not have cost the bridge its stream (see capture_token).
    health = wait_for(
        lambda: (h := stack.bridge.healthz())["stream_connected"] and h,
        timeout=30,
        what="the bridge's stream",
    )
    assert health["stream_connects"] == connects, health
    return ChatLoop(stack=stack, app_url=app.url, capture_token=token)
