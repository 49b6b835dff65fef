"""The real-Rasa stack shared by Tier 2 (tests/rasa) and Tier 3 (tests/browser), one per session.

Registered as a plugin (``tests.bridge.fixtures.register_plugins``), so both tiers get the same
session-scoped instance instead of one each (Rasa alone takes ~1.2 GB and ~30 s to start):

    receiver (``receiver serve``, throwaway Postgres)  ──SSE──►  bridge (uvicorn thread)
    rasa run (REST + socketio)  ──►  action server  ──GET /reply/{user}──►  bridge  ──►  fake LLM

The stack comes in both bridge modes (the fixture is parametrized, so every test that uses it
runs once per mode): ``stream`` (the tutorial's: the bridge holds the SSE stream and keeps
context in memory) and ``pull`` (0.13.0's Rasa recipe: on every ``/reply`` the bridge reads the
user's live activity over REST with the product's MCP key). Pytest groups the tests by mode, so
one Rasa runs at a time.

Needs ``.venv-rasa`` and the trained model (``scripts/rasa-venv.sh``, run by ``make test``);
the fixture skips with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml

from tests.bridge.helpers import REPLY_TOKEN, LiveBridge, Product, bridge_settings
from tests.fakes.llm import FakeLLM
from tests.rasa.procs import Proc, free_port
from tests.rasa.rasa_env import BOT, MODEL, RASA_BIN, RASA_ENV, RASA_PYTHON, rasa_model_missing
from tests.unavailable import unavailable

VENV_BIN = Path(sys.executable).parent
RASA_READY_TIMEOUT = 240.0  # ~30 s on 2 idle cores; generous for a loaded CI machine


@dataclass
class RasaStack:
    product: Product
    bridge: LiveBridge
    rasa_url: str
    action_url: str
    llm: FakeLLM
    capture_token: str
    mode: str = "stream"

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


@pytest.fixture(scope="session", params=["stream", "pull"])
def rasa_stack(
    request: pytest.FixtureRequest,
    pg: Any,
    template_db: str,
    fake_llm_server: FakeLLM,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RasaStack]:
    mode: str = request.param
    reason = rasa_model_missing()
    if reason:
        unavailable(reason)
    logs = tmp_path_factory.mktemp(f"rasa-stack-{mode}")
    # The fake LLM is shared by the session: each mode's tests assert on their own calls only.
    fake_llm_server.reset()
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
            mcp_key=creds["mcp_key"],
        )

        bridge = LiveBridge(bridge_settings(product, fake_llm_server, mode=mode)).start()
        bridge.wait_ready()

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
                "BRIDGE_REPLY_TOKEN": REPLY_TOKEN,
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
        yield RasaStack(
            product, bridge, rasa_url, action_url, fake_llm_server, creds["capture_token"], mode
        )
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
