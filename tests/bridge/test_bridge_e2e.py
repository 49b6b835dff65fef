"""The bridge against a real receiver (throwaway Postgres) and the fake LLM.

Events go in through the receiver's webhook exactly as the PostHog Hog destination sends them;
the bridge reads them back through ``GET /stream/{product_id}?replay=N`` with the stock
autoplay-sdk 0.7.2 client.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from bridge.app import LLM_FAILURE_REPLY
from bridge.prompts import SYSTEM_PROMPT, system_prompt_for
from tests.bridge.helpers import (
    REPLY_AUTH,
    REPLY_TOKEN,
    Product,
    StartBridge,
    hog_click,
    hog_pageview,
    wait_for,
)
from tests.fakes.llm import FakeLLM, activity_lines

APP = "http://app.test"
JANE = {"user_id": "user-jane", "email": "jane.doe@example.com"}
BOB = {"user_id": "user-bob", "email": "bob.stone@example.org"}


def _session() -> str:
    return f"sess-{uuid.uuid4()}"


def _jane_opens_invite_modal(product: Product) -> str:
    session = _session()
    product.post_events(
        hog_pageview(**JANE, session_id=session, page_url=f"{APP}/team"),
        hog_click(
            **JANE,
            session_id=session,
            text="Invite member",
            element_id="invite-member",
            page_url=f"{APP}/team",
        ),
    )
    return session


def _bob_exports_csv(product: Product) -> str:
    session = _session()
    product.post_events(
        hog_pageview(**BOB, session_id=session, page_url=f"{APP}/reports"),
        hog_click(**BOB, session_id=session, text="Export CSV", page_url=f"{APP}/reports"),
    )
    return session


def test_healthz(product: Product, start_bridge: StartBridge) -> None:
    bridge = start_bridge(product)
    bridge.wait_connected()
    health = bridge.healthz()
    assert health["status"] == "ok"
    assert health["users_tracked"] == 0
    assert health["sessions_tracked"] == 0


def test_reply_is_grounded_in_the_users_activity(
    product: Product, start_bridge: StartBridge, fake_llm: FakeLLM
) -> None:
    bridge = start_bridge(product)
    _jane_opens_invite_modal(product)
    bridge.wait_events(2)

    body = bridge.reply(JANE["user_id"], "how do I add a teammate?")

    [call] = fake_llm.chats_asking("how do I add a teammate?")
    assert body["reply"] == call.answer  # what the LLM said is what Rasa gets
    assert body["name"] == "Jane Doe"  # name from the email
    assert body["has_activity"] is True
    assert call.model == "fake-model"
    assert call.system == system_prompt_for("Jane Doe")
    lines = activity_lines(call.user)
    assert any("Invite member" in line and "/team" in line for line in lines), lines
    assert call.user.endswith("[CURRENT USER MESSAGE]\nhow do I add a teammate?")


def test_reply_without_activity(
    product: Product, start_bridge: StartBridge, fake_llm: FakeLLM
) -> None:
    bridge = start_bridge(product)
    bridge.wait_connected()
    body = bridge.reply("user-nobody", "what can I do here?")
    assert body == {
        "reply": "ANSWER for (unknown) | activity: (none) | q: what can I do here?",
        "name": None,
        "has_activity": False,
    }
    [call] = fake_llm.chats_asking("what can I do here?")
    assert "[RECENT PRODUCT ACTIVITY]" not in call.user
    assert call.system == system_prompt_for(None)


def test_llm_failure_gives_a_clear_reply_and_a_log_entry(
    product: Product,
    start_bridge: StartBridge,
    fake_llm: FakeLLM,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bridge = start_bridge(product)
    _jane_opens_invite_modal(product)
    bridge.wait_events(2)
    fake_llm.fail = True
    caplog.set_level(logging.ERROR, logger="bridge")

    body = bridge.reply(JANE["user_id"], "how do I add a teammate?")  # asserts HTTP 200

    assert body["reply"] == LLM_FAILURE_REPLY
    assert body["error"] == "LLM endpoint answered HTTP 500"
    assert body["has_activity"] is True
    assert len(fake_llm.chats_asking("how do I add a teammate?")) == 1  # no retry storm
    failures = [r for r in caplog.records if "LLM call failed" in r.getMessage()]
    assert failures and failures[0].levelno == logging.ERROR
    assert "user-jane" in failures[0].getMessage()


def test_llm_unreachable_gives_a_clear_reply(
    product: Product, start_bridge: StartBridge
) -> None:
    bridge = start_bridge(product, llm_base_url="http://127.0.0.1:9/v1")
    body = bridge.reply("user-x", "hello?")
    assert body["reply"] == LLM_FAILURE_REPLY
    assert body["error"] == "LLM endpoint unreachable"


def test_no_activity_leaks_between_users(
    product: Product, start_bridge: StartBridge, fake_llm: FakeLLM
) -> None:
    bridge = start_bridge(product)
    jane_session = _jane_opens_invite_modal(product)
    bob_session = _bob_exports_csv(product)
    bridge.wait_events(4)

    bridge.reply(JANE["user_id"], "q-jane")
    bridge.reply(BOB["user_id"], "q-bob")
    [jane] = fake_llm.chats_asking("q-jane")
    [bob] = fake_llm.chats_asking("q-bob")

    # The tutorial's system prompt itself mentions "Invite member" (example C), so compare
    # what the bridge added to it: the name line and the user message.
    assert jane.system.startswith(SYSTEM_PROMPT) and bob.system.startswith(SYSTEM_PROMPT)
    jane_prompt = jane.system[len(SYSTEM_PROMPT) :] + jane.user
    bob_prompt = bob.system[len(SYSTEM_PROMPT) :] + bob.user
    assert "Invite member" in jane_prompt and "Jane Doe" in jane_prompt
    assert "Export CSV" in bob_prompt and "Bob Stone" in bob_prompt
    for leaked in ("Export CSV", "/reports", "Bob", bob_session):
        assert leaked not in jane_prompt, leaked
    for leaked in ("Invite member", "/team", "Jane", jane_session):
        assert leaked not in bob_prompt, leaked


def test_restarted_bridge_has_the_activity_from_before(
    product: Product, start_bridge: StartBridge, fake_llm: FakeLLM
) -> None:
    first = start_bridge(product)
    _jane_opens_invite_modal(product)
    first.wait_events(2)
    before = first.reply(JANE["user_id"], "before restart")
    first.stop()

    # A new bridge process-equivalent: fresh state, same settings. No new events are posted;
    # everything it knows comes from the receiver's replay of the lookback window.
    second = start_bridge(product)
    second.wait_events(2)
    after = second.reply(JANE["user_id"], "after restart")

    assert after["has_activity"] is True and after["name"] == "Jane Doe"
    [b] = fake_llm.chats_asking("before restart")
    [a] = fake_llm.chats_asking("after restart")
    assert activity_lines(a.user) == activity_lines(b.user)
    assert before["reply"].replace("before restart", "after restart") == after["reply"]


def test_replay_can_be_turned_off(
    product: Product, start_bridge: StartBridge
) -> None:
    _jane_opens_invite_modal(product)
    # Without ?replay= a (re)connect is a fresh live tail, like the hosted connector.
    bridge = start_bridge(product, replay=False)
    bridge.wait_connected()
    assert bridge.reply(JANE["user_id"], "anything")["has_activity"] is False


def test_query_is_required(product: Product, start_bridge: StartBridge) -> None:
    bridge = start_bridge(product)
    resp = httpx.get(f"{bridge.url}/reply/user-jane", params={"query": "  "}, headers=REPLY_AUTH)
    assert resp.status_code == 400
    assert httpx.get(f"{bridge.url}/reply/user-jane", headers=REPLY_AUTH).status_code == 400


def test_reply_requires_the_token(
    product: Product, start_bridge: StartBridge, fake_llm: FakeLLM
) -> None:
    """/reply returns a user's activity-grounded answer and spends LLM money: only the Rasa
    action, holding BRIDGE_REPLY_TOKEN, may call it (issue 14: it was open to anyone)."""
    _jane_opens_invite_modal(product)
    bridge = start_bridge(product)
    bridge.wait_events(2)
    calls = len(fake_llm.chat_requests)
    for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"},
                    {"Authorization": REPLY_TOKEN}, {"Authorization": f"Basic {REPLY_TOKEN}"}):
        r = httpx.get(f"{bridge.url}/reply/user-jane", params={"query": "what did I do"},
                      headers=headers, timeout=15)
        assert r.status_code == 401, (headers, r.status_code)
        assert "Invite" not in r.text
    assert len(fake_llm.chat_requests) == calls  # no LLM call for a refused request
    assert bridge.reply("user-jane", "what did I do")["has_activity"] is True
    # A bridge without a token refuses everyone, the right header included.
    closed = start_bridge(product, reply_token=None)
    r = httpx.get(f"{closed.url}/reply/user-jane", params={"query": "x"}, headers=REPLY_AUTH)
    assert r.status_code == 401


def test_cli_refuses_to_start_without_a_reply_token(product: Product, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update({"BRIDGE_STREAM_URL": product.stream_url, "BRIDGE_STREAM_TOKEN": product.stream_key})
    exe = Path(sys.executable).parent / "bridge"
    res = subprocess.run([str(exe), "serve", "--env-file", ""], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 2 and "BRIDGE_REPLY_TOKEN" in res.stderr


def test_cli_serves_and_stops_on_sigterm(
    product: Product, fake_llm: FakeLLM, tmp_path: Path
) -> None:
    _jane_opens_invite_modal(product)
    port = _free_port()
    env = {
        **os.environ,
        # The tutorial's variable names, as a tutorial .env would set them.
        "STREAM_URL": product.stream_url,
        "UNKEY_API_KEY": product.stream_key,
        "OPENAI_API_KEY": "test-key",
        "OPENAI_BASE_URL": fake_llm.base_url,
        "LLM_MODEL": "fake-model",
        "BRIDGE_REPLY_TOKEN": REPLY_TOKEN,
    }
    log = tmp_path / "bridge.log"
    exe = Path(sys.executable).parent / "bridge"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [str(exe), "serve", "--host", "127.0.0.1", "--port", str(port), "--env-file", ""],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        url = f"http://127.0.0.1:{port}"

        def ingested() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"bridge exited: {log.read_text()}")
            try:
                return httpx.get(f"{url}/healthz", timeout=1).json()["events_received"] >= 2
            except httpx.HTTPError:
                return False

        wait_for(ingested, timeout=30, what="the CLI bridge to ingest the events")
        body = httpx.get(f"{url}/reply/user-jane", params={"query": "hi"}, headers=REPLY_AUTH,
                         timeout=15).json()
        assert body["name"] == "Jane Doe" and body["has_activity"] is True
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
            raise
    # uvicorn re-raises the caught SIGTERM after a graceful shutdown, hence -SIGTERM.
    assert rc in (0, -signal.SIGTERM), log.read_text()
    assert "Application shutdown complete" in log.read_text()
    assert "autoplay stream listening on" in log.read_text()
    # The stream key never reaches the log.
    assert product.stream_key not in log.read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

