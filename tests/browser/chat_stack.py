"""Tier 3 fixtures: the Tier 2 stack plus what a browser needs on top of it.

``rasa_stack`` is the Tier 2 session fixture from ``tests/rasa/stack.py``:
``receiver serve`` on a throwaway database, a live bridge on the product's stream, the real
action server (rasa-sdk 3.6.2) and ``rasa run`` (REST + socketio, ``--cors "*"``), the fake
OpenAI-compatible LLM; everything on 127.0.0.1, stopped at the end of the session. Import the
names below into the test module (``from .chat_stack import ...``).

``rasa_stack`` and the fake LLM are plugin fixtures (``tests.bridge.fixtures.register_plugins``,
called by tests/browser/conftest.py too), so Tier 2 and Tier 3 share one stack per session.

``chat_loop`` adds the demo app: posthog-js sends to the stack's receiver with the product's
capture token. Open it with ``?rasa=<ChatLoop.rasa_url>`` and every page of that tab loads the
rasa-webchat widget against the stack's Rasa.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.bridge.helpers import wait_for
from tests.fakes.llm import FakeLLM
from tests.rasa.stack import RasaStack

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
def chat_loop(rasa_stack: RasaStack, demo_app_factory: Callable[..., Any]) -> ChatLoop:
    stack = rasa_stack
    app = demo_app_factory(
        api_host=stack.product.receiver_url,
        token=stack.capture_token,
        product_id=stack.product.product_id,
    )
    if stack.mode == "stream":
        wait_for(
            lambda: stack.bridge.healthz()["stream_connected"], timeout=30,
            what="the bridge's stream",
        )
    return ChatLoop(stack=stack, app_url=app.url, capture_token=stack.capture_token)
