"""Tier 2: real Rasa 3.6.21 + the real action server (rasa-sdk 3.6.2) + a live bridge.

One stack per test session, everything on 127.0.0.1:

    receiver (``receiver serve``, throwaway Postgres)  ──SSE──►  bridge (uvicorn thread)
    rasa run (REST + socketio)  ──►  action server  ──GET /reply/{user}──►  bridge  ──►  fake LLM

Needs ``.venv-rasa`` and the trained model (``scripts/rasa-venv.sh``, run by ``make test``);
skips with the reason otherwise. Intents are made deterministic with exact training phrases
and the literal ``/nlu_fallback`` payload.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import secrets
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml

from tests.bridge.helpers import LiveBridge, Product, bridge_settings, hog_click, hog_pageview
from tests.fakes.llm import FakeLLM
from tests.rasa.procs import Proc, free_port
from tests.rasa.rasa_env import (
    BOT,
    MODEL,
    RASA_BIN,
    RASA_ENV,
    RASA_PYTHON,
    rasa_model_missing,
    rasa_venv_missing,
)

# The session stack's setup (Rasa loads its model: ~30 s idle, minutes on a loaded machine)
# is charged to the first test, so the suite-wide 180 s timeout is too tight here.
pytestmark = [pytest.mark.rasa, pytest.mark.timeout(900)]

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
APP = "http://app.test"
GREETING = "Hey! I'm your copilot. I can see what you've been doing — ask me about it."
RASA_READY_TIMEOUT = 240.0  # ~30 s on 2 idle cores; generous for a loaded CI machine


@dataclass
class RasaStack:
    product: Product
    bridge: LiveBridge
    rasa_url: str
    action_url: str
    llm: FakeLLM

    def rest(self, sender: str, message: str, metadata: dict[str, Any]) -> list[dict[str, Any]]:
        resp = httpx.post(
            f"{self.rasa_url}/webhooks/rest/webhook",
            json={"sender": sender, "message": message, "metadata": metadata},
            timeout=60,
        )
        assert resp.status_code == 200, resp.text
        return resp.json()


async def _admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def rasa_stack(
    pg: Any,
    template_db: str,
    fake_llm_server: FakeLLM,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RasaStack]:
    reason = rasa_model_missing()
    if reason:
        pytest.skip(reason)
    logs = tmp_path_factory.mktemp("rasa-stack")
    procs: list[Proc] = []
    bridge: LiveBridge | None = None
    db = "rasa_" + secrets.token_hex(4)
    asyncio.run(_admin(pg.dsn("postgres"), f"CREATE DATABASE {db} TEMPLATE {template_db}"))
    try:
        # Rasa first: it is by far the slowest to become ready, the rest starts meanwhile.
        action_port, rasa_port, receiver_port = free_port(), free_port(), free_port()
        endpoints = logs / "endpoints.yml"
        endpoints.write_text(
            yaml.safe_dump({"action_endpoint": {"url": f"http://127.0.0.1:{action_port}/webhook"}})
        )
        rasa_env = {
            **RASA_ENV,
            "RASA_CACHE_DIRECTORY": str(logs / "rasa-cache"),
            # Sanic reads SANIC_* into its config; bound the shutdown wait for open sockets.
            "SANIC_GRACEFUL_SHUTDOWN_TIMEOUT": "3",
        }
        rasa = Proc(
            "rasa",
            [
                str(RASA_BIN), "run",
                "--enable-api", "--cors", "*",
                "-i", "127.0.0.1", "-p", str(rasa_port),
                "--endpoints", str(endpoints),
                "--credentials", str(BOT / "credentials.yml"),
                "-m", str(MODEL),
            ],
            cwd=logs,
            env=rasa_env,
            log_dir=logs,
        )  # fmt: skip
        procs.append(rasa)

        receiver = Proc(
            "receiver",
            [str(VENV_BIN / "receiver"), "serve"],
            cwd=logs,
            env={
                "RECEIVER_DATABASE_URL": pg.url(db),
                "RECEIVER_HOST": "127.0.0.1",
                "RECEIVER_PORT": str(receiver_port),
            },
            log_dir=logs,
        )
        procs.append(receiver)
        receiver_url = f"http://127.0.0.1:{receiver_port}"
        receiver.wait_http(f"{receiver_url}/readyz", timeout=60)
        resp = httpx.post(
            f"{receiver_url}/products",
            json={"product_id": "rasa-tier2", "contact_email": "ops@example.com"},
            timeout=10,
        )
        assert resp.status_code == 201, resp.text
        creds = resp.json()
        product = Product(
            receiver_url=receiver_url,
            product_id="rasa-tier2",
            webhook_secret=creds["webhook_secret"],
            stream_key=creds["unkey_key"],
        )

        bridge = LiveBridge(bridge_settings(product, fake_llm_server)).start()
        bridge.wait_connected()

        # rasa_sdk has no host flag but honours SANIC_HOST: keep it on loopback.
        action_server = Proc(
            "action-server",
            [str(RASA_PYTHON), "-m", "rasa_sdk", "--actions", "actions", "-p", str(action_port)],
            cwd=BOT,
            env={
                **RASA_ENV,
                "SANIC_HOST": "127.0.0.1",
                "SANIC_GRACEFUL_SHUTDOWN_TIMEOUT": "3",
                "BRIDGE_URL": bridge.url,
            },
            log_dir=logs,
        )
        procs.append(action_server)
        action_url = f"http://127.0.0.1:{action_port}"
        action_server.wait_http(f"{action_url}/health", timeout=60)

        rasa_url = f"http://127.0.0.1:{rasa_port}"
        rasa.wait_http(
            f"{rasa_url}/status",
            timeout=RASA_READY_TIMEOUT,
            ok=lambda r: r.status_code == 200 and bool(r.json().get("model_file")),
        )
        yield RasaStack(product, bridge, rasa_url, action_url, fake_llm_server)
    finally:
        # Clients before servers: Rasa holds keep-alive connections to the action server and
        # the bridge holds a stream on the receiver; stopping a server first would make it wait
        # out its graceful-shutdown timeout for those connections.
        by_name = {p.name: p for p in procs}
        if "rasa" in by_name:
            # Rasa takes >10 s to exit on SIGTERM and holds nothing worth flushing here (the
            # tracker store is in memory): give it a few seconds, then SIGKILL.
            by_name["rasa"].stop(timeout=5)
        if "action-server" in by_name:
            by_name["action-server"].stop()
        if bridge is not None:
            bridge.stop()
        if "receiver" in by_name:
            by_name["receiver"].stop()
        asyncio.run(_admin(pg.dsn("postgres"), f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"))


def _clicked(stack: RasaStack, user_id: str, email: str, *, text: str, page: str) -> None:
    """The user opens a page and clicks a button; returns once the bridge has both events."""
    before = stack.bridge.healthz()["events_received"]
    session = f"sess-{uuid.uuid4()}"
    url = f"{APP}/{page}"
    stack.product.post_events(
        hog_pageview(user_id=user_id, email=email, session_id=session, page_url=url),
        hog_click(user_id=user_id, email=email, session_id=session, text=text, page_url=url),
    )
    stack.bridge.wait_events(before + 2)


# --------------------------------------------------------------------------- no server needed


def test_rasa_data_validate() -> None:
    reason = rasa_venv_missing()
    if reason:
        pytest.skip(reason)
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
        pytest.skip(reason)
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
