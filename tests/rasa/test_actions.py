"""Tier 1: the bot's custom actions under rasa-sdk 3.6.2 against a live bridge.

The actions run in the Rasa venv (``action_driver.py``); the bridge is the real app on a free
loopback port, fed by the real receiver, with the fake LLM behind it. Both metadata shapes Rasa
delivers are covered (REST: ``{"customData": {"userId"}}``; socketio with ``metadata_key:
customData``: the customData object itself), with Rasa's captured webhook requests.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bridge.app import LLM_FAILURE_REPLY
from tests.bridge.helpers import (
    REPLY_TOKEN,
    LiveBridge,
    Product,
    StartBridge,
    hog_click,
    hog_pageview,
)
from tests.fakes.llm import FakeLLM
from tests.rasa.rasa_env import BOT, RASA_ENV

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "action_driver.py"
APP = "http://app.test"
JANE = {"user_id": "user-42", "email": "jane.doe@example.com"}  # the REST capture's user
SAM = {"user_id": "user-sio", "email": "sam.lee@example.com"}  # the socketio capture's user

FALLBACKS = {
    "action_ask_llm": "I'm not sure I caught that. Try asking what you just did, or for help.",
    "action_recent_activity": (
        "I haven't seen activity in the last few minutes. Click around and ask again."
    ),
    "action_help_current_page": (
        "I don't know what page you're on yet. Click anywhere and ask again."
    ),
}


def captured_request(name: str) -> dict[str, Any]:
    """Rasa 3.6.21's POST /webhook body, recorded on the wire (rest or socketio)."""
    data = json.loads((HERE / "data" / f"rasa_action_call_{name}.json").read_text())
    return copy.deepcopy(data["request"])


def run_actions(
    python: Path, bridge_url: str, cases: list[dict[str, Any]], token: str = REPLY_TOKEN
) -> list[Any]:
    env = {**os.environ, **RASA_ENV, "BRIDGE_URL": bridge_url, "BRIDGE_TIMEOUT_S": "20",
           "BRIDGE_REPLY_TOKEN": token}
    proc = subprocess.run(
        [str(python), str(DRIVER), str(BOT)],
        input=json.dumps({"cases": cases}),
        capture_output=True,
        text=True,
        env=env,
        cwd=BOT,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)["results"]


def run_case(action: str, *, text: str, metadata: Any = None, **extra: Any) -> dict[str, Any]:
    return {"kind": "run", "action": action, "text": text, "metadata": metadata, **extra}


def texts(result: dict[str, Any]) -> list[str]:
    return [m["text"] for m in result.get("responses", result.get("messages", []))]


@pytest.fixture
def live_bridge(product: Product, start_bridge: StartBridge) -> LiveBridge:
    bridge = start_bridge(product)
    team, reports = f"{APP}/team", f"{APP}/reports"
    product.post_events(
        hog_pageview(**JANE, session_id="sess-jane", page_url=team),
        hog_click(**JANE, session_id="sess-jane", text="Invite member", page_url=team),
        hog_pageview(**SAM, session_id="sess-sam", page_url=reports),
        hog_click(**SAM, session_id="sess-sam", text="Export CSV", page_url=reports),
    )
    bridge.wait_events(4)
    return bridge


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_actions_reach_the_bridge_for_the_right_user(
    rasa_python: Path, live_bridge: LiveBridge, fake_llm: FakeLLM
) -> None:
    rest, sio = captured_request("rest"), captured_request("socketio")
    assert rest["tracker"]["latest_message"]["metadata"] == {"customData": {"userId": "user-42"}}
    assert sio["tracker"]["latest_message"]["metadata"]["userId"] == "user-sio"
    rest_slot_only = copy.deepcopy(rest)
    rest_slot_only["tracker"]["latest_message"]["metadata"] = {}

    results = run_actions(
        rasa_python,
        live_bridge.url,
        [
            {"kind": "webhook", "request": rest},
            {"kind": "webhook", "request": sio},
            # Each action, each metadata shape, driven through run() with a real Tracker.
            run_case(
                "action_ask_llm",
                text="how do I add a teammate?",
                metadata={"customData": {"userId": "user-42"}},
            ),
            run_case(
                "action_help_current_page",
                text="help me with this page",
                metadata={"language": "en", "userId": "user-sio"},
            ),
            # No metadata on this message: the session_started_metadata slot names the user.
            {"kind": "webhook", "request": rest_slot_only},
            # No metadata at all: the sender id is the last resort.
            run_case("action_recent_activity", text="recap", sender_id="user-42"),
        ],
    )
    rest_out, sio_out, ask, help_page, slot_only, by_sender = (texts(r) for r in results)

    answers = {r.answer for r in fake_llm.chat_requests}
    for out in (rest_out, sio_out, ask, help_page, slot_only, by_sender):
        assert len(out) == 1 and out[0] in answers, out  # the LLM's answer reaches Rasa

    assert rest_out[0].startswith("ANSWER for Jane Doe | activity: ")
    assert "Invite member" in rest_out[0] and rest_out[0].endswith("| q: what did i just do")
    assert sio_out[0].startswith("ANSWER for Sam Lee | activity: ")
    assert "Export CSV" in sio_out[0] and "Invite member" not in sio_out[0]
    assert ask[0].startswith("ANSWER for Jane Doe") and "q: how do I add a teammate?" in ask[0]
    assert help_page[0].startswith("ANSWER for Sam Lee") and "Export CSV" in help_page[0]
    assert slot_only[0] == rest_out[0]
    assert by_sender[0].startswith("ANSWER for Jane Doe") and by_sender[0].endswith("q: recap")
    # The webhook answer has the shape Rasa consumes.
    assert results[0]["events"] == []
    assert set(results[0]["responses"][0]) >= {"text", "buttons", "custom", "image"}


def test_actions_fall_back_when_the_bridge_is_down(rasa_python: Path) -> None:
    down = f"http://127.0.0.1:{_closed_port()}"
    cases = [{"kind": "webhook", "request": captured_request("rest")}] + [
        run_case(name, text="hello", metadata={"customData": {"userId": "user-42"}})
        for name in FALLBACKS
    ]
    results = run_actions(rasa_python, down, cases)
    assert texts(results[0]) == [FALLBACKS["action_recent_activity"]]
    for name, result in zip(FALLBACKS, results[1:], strict=True):
        assert texts(result) == [FALLBACKS[name]]


def test_actions_send_the_reply_token(
    rasa_python: Path, live_bridge: LiveBridge, fake_llm: FakeLLM
) -> None:
    """The bridge answers the action only with BRIDGE_REPLY_TOKEN: with another one the chat gets
    the action's fallback and the LLM is never called."""
    calls = len(fake_llm.chat_requests)
    [refused] = run_actions(
        rasa_python, live_bridge.url,
        [run_case("action_ask_llm", text="anything", metadata={"userId": "user-42"})],
        token="not-the-bridges-token-0000",
    )
    assert texts(refused) == [FALLBACKS["action_ask_llm"]]
    assert len(fake_llm.chat_requests) == calls


def test_actions_relay_the_bridges_llm_failure_message(
    rasa_python: Path, live_bridge: LiveBridge, fake_llm: FakeLLM
) -> None:
    fake_llm.fail = True
    [result] = run_actions(
        rasa_python,
        live_bridge.url,
        [run_case("action_ask_llm", text="anything", metadata={"userId": "user-42"})],
    )
    # The bridge's clear message, not the action's generic fallback.
    assert texts(result) == [LLM_FAILURE_REPLY]
