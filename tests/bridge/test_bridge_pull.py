"""The bridge in pull mode (BRIDGE_MODE=pull) against a real receiver and the fake LLM.

No stream and no in-memory store: every /reply reads the user's live activity over REST with the
product's MCP key, as autoplay-sdk 0.13.0's Rasa recipe does.
"""

from __future__ import annotations

import uuid

import httpx
import pytest
from pydantic import ValidationError

from bridge.settings import BridgeSettings
from tests.bridge.helpers import Product, StartBridge, hog_click, hog_pageview
from tests.fakes.llm import FakeLLM, activity_lines

APP = "http://app.test"


def _jane_invites(product: Product) -> None:
    session = f"sess-{uuid.uuid4()}"
    jane = {"user_id": "user-jane", "email": "jane.doe@example.com"}
    product.post_events(
        hog_pageview(**jane, session_id=session, page_url=f"{APP}/team"),
        hog_click(**jane, session_id=session, text="Invite member", page_url=f"{APP}/team"),
    )


def test_each_reply_pulls_the_users_activity(
    product: Product, start_bridge: StartBridge, fake_llm: FakeLLM
) -> None:
    bridge = start_bridge(product, mode="pull")
    assert bridge.healthz() == {"status": "ok", "mode": "pull", "pulls": 0, "pull_failures": 0,
                                "last_status": None}
    before = bridge.reply("user-jane", "anything?")
    assert before["has_activity"] is False and before["name"] is None

    _jane_invites(product)  # 200 means committed: the very next reply sees it, no waiting
    got = bridge.reply("user-jane", "how do I add a teammate?")
    assert got["has_activity"] is True and got["name"] == "Jane Doe"
    [call] = fake_llm.chats_asking("how do I add a teammate?")
    assert activity_lines(call.user) == [
        "[0] pageview: User landed on the Team page — http://app.test/team",
        "[1] click: User clicked Invite member button on the team page — http://app.test/team",
    ]
    assert "Jane" in call.system
    # Another user's reply carries none of Jane's activity.
    other = bridge.reply("user-bob", "and me?")
    assert other["has_activity"] is False
    [bob] = fake_llm.chats_asking("and me?")
    assert "Invite member" not in bob.user
    assert bridge.healthz()["pulls"] == 3 and bridge.healthz()["pull_failures"] == 0


def test_a_failing_read_still_gets_a_reply(
    product: Product, start_bridge: StartBridge, fake_llm: FakeLLM, caplog: pytest.LogCaptureFixture
) -> None:
    _jane_invites(product)
    wrong = Product(product.receiver_url, product.product_id, product.webhook_secret,
                    product.stream_key, mcp_key="rmk_not-the-key")
    bridge = start_bridge(wrong, mode="pull")
    got = bridge.reply("user-jane", "still there?")
    assert got["has_activity"] is False and got["reply"].startswith("ANSWER for")
    assert bridge.healthz()["pull_failures"] == 1 and bridge.healthz()["last_status"] == 401
    assert "rmk_not-the-key" not in caplog.text

    unreachable = start_bridge(product, mode="pull", activity_url="http://127.0.0.1:9")
    assert unreachable.reply("user-jane", "hello?")["has_activity"] is False
    assert unreachable.healthz()["last_status"] is None


def test_pull_mode_needs_its_settings() -> None:
    with pytest.raises(ValidationError, match="pull mode needs BRIDGE_ACTIVITY_URL, BRIDGE_PRODUCT_ID"):
        BridgeSettings(mode="pull", mcp_key="k")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="required in stream mode"):
        BridgeSettings()  # type: ignore[call-arg]
    s = BridgeSettings(mode="pull", activity_url="http://r:8000/mcp", product_id="p", mcp_key="k")  # type: ignore[call-arg]
    assert s.activity_url == "http://r:8000"  # mcp_url works as the base URL too


def _subscribers(product: Product) -> float:
    metrics = httpx.get(f"{product.receiver_url}/metrics", timeout=10).text
    values = [float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
              if line.startswith("receiver_stream_subscribers{") and product.product_id in line]
    return sum(values)


def test_the_stream_is_not_opened_in_pull_mode(product: Product, start_bridge: StartBridge) -> None:
    start_bridge(product, mode="pull").reply("u", "hi")
    assert _subscribers(product) == 0
    start_bridge(product).wait_connected()  # the same probe sees a stream-mode bridge
    assert _subscribers(product) == 1
