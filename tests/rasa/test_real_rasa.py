"""Tier 2: real Rasa 3.6.21 + the real action server (rasa-sdk 3.6.2) + a live bridge.

One stack per test session, everything on 127.0.0.1:

    receiver (``receiver serve``, throwaway Postgres)  ──SSE──►  bridge (uvicorn thread)
    rasa run (REST + socketio)  ──►  action server  ──GET /reply/{user}──►  bridge  ──►  fake LLM

Needs ``.venv-rasa`` and the trained model (``scripts/rasa-venv.sh``, run by ``make test``);
skips with the reason otherwise. Intents are made deterministic with exact training phrases
and the literal ``/nlu_fallback`` payload.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from tests.bridge.helpers import hog_click, hog_pageview
from tests.rasa.rasa_env import (
    BOT,
    MODEL,
    RASA_BIN,
    RASA_ENV,
    RASA_PYTHON,
    rasa_model_missing,
    rasa_venv_missing,
)
from tests.rasa.stack import RasaStack
from tests.unavailable import unavailable

# The session stack's setup (Rasa loads its model: ~30 s idle, minutes on a loaded machine)
# is charged to the first test, so the suite-wide 180 s timeout is too tight here.
pytestmark = [pytest.mark.rasa, pytest.mark.timeout(900)]

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
APP = "http://app.test"
GREETING = "Hey! I'm your copilot. I can see what you've been doing — ask me about it."
RASA_READY_TIMEOUT = 240.0  # ~30 s on 2 idle cores; generous for a loaded CI machine




def _clicked(stack: RasaStack, user_id: str, email: str, *, text: str, page: str) -> None:
    """The user opens a page and clicks a button; returns once the bridge can see both events."""
    before = stack.bridge.events_seen()
    session = f"sess-{uuid.uuid4()}"
    url = f"{APP}/{page}"
    stack.product.post_events(
        hog_pageview(user_id=user_id, email=email, session_id=session, page_url=url),
        hog_click(user_id=user_id, email=email, session_id=session, text=text, page_url=url),
    )
    stack.bridge.wait_delivered(before, 2)


# --------------------------------------------------------------------------- no server needed


def test_rasa_data_validate() -> None:
    reason = rasa_venv_missing()
    if reason:
        unavailable(reason)
    proc = subprocess.run(
        [str(RASA_BIN), "data", "validate", "--fail-on-warnings"],
        cwd=BOT,
        env={**os.environ, **RASA_ENV},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_trained_model_matches_the_domain() -> None:
    reason = rasa_model_missing()
    if reason:
        unavailable(reason)
    with tarfile.open(MODEL) as tar:
        member = tar.extractfile("metadata.json") or tar.extractfile("/metadata.json")
        assert member is not None
        meta = json.load(member)
    assert meta["rasa_open_source_version"] == "3.6.21"
    assert meta["assistant_id"] == "autoplay-copilot"
    domain = yaml.safe_load((BOT / "domain.yml").read_text())
    # A model trained on older data would miss (or keep) intents, actions or responses.
    assert set(meta["domain"]["intents"]) >= set(domain["intents"])
    assert set(meta["domain"]["actions"]) == set(domain["actions"])
    assert set(meta["domain"]["responses"]) == set(domain["responses"])


# --------------------------------------------------------------------------- the live stack


def test_action_server_serves_the_bots_actions(rasa_stack: RasaStack) -> None:
    names = {a["name"] for a in httpx.get(f"{rasa_stack.action_url}/actions").json()}
    assert names == {"action_ask_llm", "action_recent_activity", "action_help_current_page"}


def test_rest_chat_reaches_the_bridge_for_the_clicking_user(rasa_stack: RasaStack) -> None:
    stack = rasa_stack
    user, email = "rest-user-7", "rita.rest@example.com"
    _clicked(stack, user, email, text="Invite member", page="team")
    meta = {"customData": {"userId": user}}
    # The REST sender is a conversation id, not the user: only metadata names the user.
    sender = f"conv-{uuid.uuid4().hex[:8]}"

    greet = stack.rest(sender, "hello", meta)
    recap = stack.rest(sender, "what did I just do", meta)
    free = stack.rest(sender, "/nlu_fallback", meta)

    assert [m["text"] for m in greet] == [GREETING]
    [recap_msg] = recap
    assert recap_msg["recipient_id"] == sender
    assert recap_msg["text"].startswith("ANSWER for Rita Rest | activity: ")
    assert "Invite member" in recap_msg["text"]
    assert recap_msg["text"].endswith("| q: what did I just do")
    [free_msg] = free
    assert free_msg["text"].startswith("ANSWER for Rita Rest")
    assert free_msg["text"].endswith("| q: /nlu_fallback")

    # What the LLM was asked is exactly what came back through Rasa, and it held this
    # user's activity.
    [call] = stack.llm.chats_asking("what did I just do")
    assert call.answer == recap_msg["text"]
    assert "Invite member" in call.user and "/team" in call.user


def test_socketio_chat_reaches_the_bridge_for_the_clicking_user(
    rasa_stack: RasaStack, tmp_path: Path
) -> None:
    stack = rasa_stack
    user, email = "sio-user-9", "sid.socket@example.com"
    _clicked(stack, user, email, text="Export CSV", page="reports")
    python, transports = _socketio_client()
    spec = {
        "url": stack.rasa_url,
        "transports": transports,
        "session_id": None,
        # What the widget sends with every message (Step 9 customData).
        "custom_data": {"language": "en", "userId": user},
        "messages": ["/greet", "help me with this page", "/nlu_fallback"],
        "timeout": 60,
    }
    proc = subprocess.run(
        [str(python), str(HERE / "sio_chat.py")],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout)
    greet, help_page, free = out["replies"]

    assert greet == [GREETING]
    assert help_page[0].startswith("ANSWER for Sid Socket | activity: ")
    assert "Export CSV" in help_page[0] and help_page[0].endswith("| q: help me with this page")
    assert free[0].startswith("ANSWER for Sid Socket") and free[0].endswith("| q: /nlu_fallback")
    # Rasa's sender id is the widget session, not the user: the user id came from customData.
    assert out["session_id"] != user
    [call] = stack.llm.chats_asking("help me with this page")
    assert call.answer == help_page[0]
    assert "Invite member" not in call.user  # the REST test's user never leaks in


def _socketio_client() -> tuple[Path, list[str]]:
    """Who runs sio_chat.py, and over which transport.

    ``SIO_CLIENT_PYTHON`` (an interpreter with ``python-socketio[asyncio_client]`` + aiohttp)
    or this venv when it has them: websocket, like the widget. Otherwise the Rasa venv's
    python-socketio 5.8.0 over polling (its websocket client is broken, see sio_chat.py).
    """
    override = os.environ.get("SIO_CLIENT_PYTHON")
    if override:
        return Path(override), ["websocket"]
    if importlib.util.find_spec("socketio") and importlib.util.find_spec("aiohttp"):
        return Path(sys.executable), ["websocket"]
    return RASA_PYTHON, ["polling"]
