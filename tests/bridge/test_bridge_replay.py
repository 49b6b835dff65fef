"""Reconnect behaviour of the bridge against a scripted SSE endpoint.

The scripted endpoint (``scripted_stream.py``) speaks the receiver's wire format and can close a
subscriber on purpose, which the real receiver cannot be asked to do. That is the case the
bridge's dedupe exists for: the stock client reconnects with the same ``?replay=`` URL and the
whole window arrives again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.bridge.helpers import StartBridge, wait_for
from tests.bridge.scripted_stream import ScriptedStream
from tests.fakes.llm import FakeLLM, UvicornThread, activity_lines

PRODUCT = "acme"
TOKEN = "stream-key-1"


def frame(
    index: int,
    *,
    session_id: str,
    user_id: str,
    email: str | None,
    text: str,
    page: str,
    forwarded_at: float,
) -> dict[str, Any]:
    """One event as our receiver frames it (one action per frame)."""
    url = f"http://app.test/{page}"
    action = {
        "index": index,
        "type": "click",
        "title": f"Click {text} button",
        "description": f"User clicked {text} button on the {page} page",
        "timestamp_start": forwarded_at,
        "timestamp_end": forwarded_at,
        "raw_url": url,
        "canonical_url": url,
        "session_id": session_id,
        "user_id": user_id,
        "email": email,
        "conversation_id": None,
    }
    return {
        "type": "actions",
        "product_id": PRODUCT,
        "session_id": session_id,
        "user_id": user_id,
        "email": email,
        "count": 1,
        "forwarded_at": forwarded_at,
        "conversation_id": None,
        "actions": [action],
    }


@pytest.fixture
def scripted() -> Iterator[tuple[ScriptedStream, str]]:
    stream = ScriptedStream(PRODUCT, TOKEN)
    server = UvicornThread(stream.app, name="scripted-stream").start()
    try:
        yield stream, f"{server.url}/stream/{PRODUCT}"
    finally:
        stream.shutdown()
        server.stop()


StartOnScript = Callable[..., Any]


@pytest.fixture
def start_on_script(
    start_bridge: StartBridge, scripted: tuple[ScriptedStream, str]
) -> StartOnScript:
    _, url = scripted

    def _start(**overrides: Any) -> Any:
        values: dict[str, Any] = {"stream_url": url, "stream_token": TOKEN, **overrides}
        return start_bridge(None, **values)

    return _start


def _clicks(n: int, *, user: str = "u-1", session: str = "s-1") -> list[dict[str, Any]]:
    base = time.time() - 60
    return [
        frame(
            i,
            session_id=session,
            user_id=user,
            email="jane.doe@example.com",
            text=f"Step {i}",
            page="team",
            forwarded_at=base + i,
        )
        for i in range(n)
    ]


def test_reconnect_replay_is_deduplicated(
    scripted: tuple[ScriptedStream, str], start_on_script: StartOnScript, fake_llm: FakeLLM
) -> None:
    stream, _ = scripted
    for f in _clicks(3):
        stream.add_frame(f)
    stream.close_first_n = 2  # two forced reconnects, each replaying the same three frames
    bridge = start_on_script()

    wait_for(lambda: len(stream.connections) >= 3, timeout=20, what="two reconnects")
    health = wait_for(
        lambda: (h := bridge.healthz())["duplicates_dropped"] >= 6 and h,
        what="replayed frames dropped",
    )
    assert health["events_received"] == 3
    assert health["stream_connects"] >= 3
    # Every connection asked for the replay window.
    assert all(c.get("replay") == "300" for c in stream.connections)

    body = bridge.reply("u-1", "what did I just do")
    prompt = fake_llm.chats_asking("what did I just do")[0].user
    assert [line.split(":")[0] for line in activity_lines(prompt)] == [
        "[0] click",
        "[1] click",
        "[2] click",
    ]
    assert body["has_activity"] is True


def test_frames_after_connect_are_ingested_live(
    scripted: tuple[ScriptedStream, str], start_on_script: StartOnScript
) -> None:
    stream, _ = scripted
    bridge = start_on_script()
    bridge.wait_connected()
    for f in _clicks(2, user="u-live", session="s-live"):
        stream.add_frame(f)
    bridge.wait_events(2)
    assert bridge.reply("u-live", "hi")["has_activity"] is True


def test_summaries_reach_the_reply_prompt(
    scripted: tuple[ScriptedStream, str], start_on_script: StartOnScript, fake_llm: FakeLLM
) -> None:
    stream, _ = scripted
    for f in _clicks(2, user="u-sum", session="s-sum"):
        stream.add_frame(f)
    bridge = start_on_script(summary_threshold=2)
    wait_for(lambda: bridge.healthz()["summaries_received"] >= 1, what="a summary")

    summary_calls = [r for r in fake_llm.requests if not r.is_chat]
    assert len(summary_calls) == 1
    assert "Step 0" in summary_calls[0].user and "Step 1" in summary_calls[0].user

    bridge.reply("u-sum", "recap")
    prompt = fake_llm.chats_asking("recap")[0].user
    assert "Summary: SUMMARY of 2 actions; last: [1] click: User clicked Step 1 button" in prompt


def test_two_bridges_in_one_process_keep_separate_state(
    scripted: tuple[ScriptedStream, str], start_on_script: StartOnScript
) -> None:
    stream, _ = scripted
    for f in _clicks(2, user="u-a", session="s-a"):
        stream.add_frame(f)
    first = start_on_script()
    first.wait_events(2)
    # A second bridge on another product (unknown to the endpoint: 404, so it never connects).
    _, url = scripted
    second = start_on_script(stream_url=url.replace(PRODUCT, "other"))
    assert first.healthz()["users_tracked"] == 1
    assert second.healthz()["users_tracked"] == 0
    assert second.reply("u-a", "hi")["has_activity"] is False
    assert first.reply("u-a", "hi")["has_activity"] is True
