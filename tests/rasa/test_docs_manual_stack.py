"""docs/rasa-loop.md, "Without Docker, service by service": the five steps run as the page
shows them, then the page's "Check each hop" commands, against a real Rasa.

What differs from the page, and why: ports are free ones (the page's 8000, 8090, 5055 and 5005
may be taken on a developer's machine), so Rasa's ``endpoints.yml`` is a copy naming the action
server's port; the receiver gets the test's throwaway Postgres (``RECEIVER_DATABASE_URL``, which
the page offers); the bridge's LLM is the fake one (``BRIDGE_LLM_BASE_URL``); placeholders in
angle brackets get values. Every process is stopped at the end.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.docblocks import one_block
from tests.fakes.llm import FakeLLM
from tests.rasa.procs import Proc, free_port
from tests.rasa.rasa_env import BOT, RASA_ENV, ROOT, rasa_model_missing
from tests.unavailable import unavailable

PAGE = "docs/rasa-loop.md"
REPLY_TOKEN = "reply-token-of-the-manual-stack-test"
RASA_TOKEN = "rasa-token-of-the-manual-stack-test"


def commands(text: str) -> list[str]:
    """The block's commands: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        out.append(re.sub(r"\s+#.*$", "", line))  # a trailing comment: "... # = make run"
    return out


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in reversed(started):
        p.stop()


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_the_manual_stack_runs_as_the_page_shows(
    database_url: str, tmp_path: Path, procs: list[Proc]
) -> None:
    if (missing := rasa_model_missing()) is not None:
        unavailable(missing)
    ports = {"8000": free_port(), "8090": free_port(), "5055": free_port(), "5005": free_port()}
    endpoints = tmp_path / "endpoints.yml"
    endpoints.write_text(
        (BOT / "endpoints.yml").read_text().replace("5055", str(ports["5055"]))
    )
    assert str(ports["5055"]) in endpoints.read_text(), "endpoints.yml names the action server"

    def local(text: str) -> str:
        for port, ours in ports.items():
            text = re.sub(rf"(?<=[:\s]){port}\b", str(ours), text)
        return (text.replace("--endpoints endpoints.yml", f"--endpoints {endpoints}")
                .replace("<openssl rand -base64 32>", REPLY_TOKEN)
                .replace("<the same token>", REPLY_TOKEN)
                .replace("<BRIDGE_REPLY_TOKEN>", REPLY_TOKEN)
                .replace("<a token>", RASA_TOKEN)
                .replace("<the --auth-token>", RASA_TOKEN))

    steps = commands(one_block(PAGE, "# 1. receiver", "bash").text)
    assert len(steps) == 6, steps
    serve, create, bridge, rasa_venv, action_server, rasa = steps
    assert serve.startswith(".venv/bin/receiver serve")
    assert create.startswith(".venv/bin/receiver product create")
    assert rasa_venv == "make rasa-venv"

    llm = FakeLLM().start()
    try:
        env = {
            **RASA_ENV,
            "RECEIVER_DATABASE_URL": database_url, "RECEIVER_PORT": str(ports["8000"]),
            "BRIDGE_PORT": str(ports["8090"]), "BRIDGE_LLM_BASE_URL": llm.base_url,
            "BRIDGE_LLM_MAX_RETRIES": "0",
            "SANIC_GRACEFUL_SHUTDOWN_TIMEOUT": "3",
            "RASA_CACHE_DIRECTORY": str(tmp_path / "rasa-cache"),
        }

        def start(name: str, command: str) -> Proc:
            # Proc starts its own process group, and stops the whole group.
            p = Proc(name, ["bash", "-c", local(command)], cwd=ROOT, env=env, log_dir=tmp_path)
            procs.append(p)
            return p

        # 1. receiver
        receiver = start("receiver", serve)
        receiver.wait_http(f"http://127.0.0.1:{ports['8000']}/readyz", timeout=60)
        created = subprocess.run(["bash", "-c", local(create).replace(" my-app ", " my-app --json ")],
                                 cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True,
                                 timeout=60, check=False)
        assert created.returncode == 0, created.stderr
        product = json.loads(created.stdout)
        assert product["stream_url"].endswith("/stream/my-app")

        # 2. bridge, with the stream key the step before printed
        bridge_proc = start("bridge", bridge.replace("<stream key>", product["stream_key"]))
        bridge_url = f"http://127.0.0.1:{ports['8090']}"
        bridge_proc.wait_http(f"{bridge_url}/healthz", timeout=60,
                              ok=lambda r: r.status_code == 200 and r.json().get("stream_connected"))

        # 3. Rasa's venv and model: already there (make test built them), so this is quick
        made = subprocess.run(["bash", "-c", rasa_venv], cwd=ROOT, capture_output=True, text=True,
                              timeout=300, check=False)
        assert made.returncode == 0, made.stdout + made.stderr

        # 4. action server, 5. Rasa
        actions = start("action-server", action_server)
        actions.wait_http(f"http://127.0.0.1:{ports['5055']}/health", timeout=60)
        rasa_proc = start("rasa", rasa)
        rasa_proc.wait_http(f"http://127.0.0.1:{ports['5005']}/status?token={RASA_TOKEN}", timeout=240,
                            ok=lambda r: r.status_code == 200 and bool(r.json().get("model_file")))

        # A click by user-alice, so the hops have something to show.
        r = httpx.post(product["webhook_url"], headers={"x-posthog-secret": product["webhook_secret"]},
                       timeout=10, json={
                           "event": "$autocapture", "distinct_id": "user-alice", "session_id": "s-alice",
                           "current_url": "https://app.example.com/billing", "event_type": "click",
                           "elements_chain": 'button:text="Upgrade plan"nth-child="1"nth-of-type="1"',
                           "button_or_link_text": "Upgrade plan",
                           "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       })
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 30
        while httpx.get(f"{bridge_url}/healthz", timeout=5).json().get("events_received", 0) < 1:
            assert time.monotonic() < deadline, "the bridge never received the click"
            time.sleep(0.1)

        # Check each hop, as the page does.
        hops = commands(one_block(PAGE, "curl -s localhost:8090/healthz", "bash").text)
        answers = []
        for hop in hops:
            done = subprocess.run(["bash", "-c", local(hop)], capture_output=True, text=True,
                                  timeout=60, check=False)
            assert done.returncode == 0, (hop, done.stderr)
            answers.append(done.stdout)
        health, reply, action_health, status, chat = answers
        assert json.loads(health)["stream_connected"] is True
        assert json.loads(reply)["has_activity"] is True and "Upgrade plan" in json.loads(reply)["reply"]
        assert json.loads(action_health)["status"] == "ok"
        assert json.loads(status)["model_file"]
        texts = " ".join(m.get("text", "") for m in json.loads(chat))
        assert "Upgrade plan" in texts, chat
        # Without the tokens, the bridge and Rasa refuse.
        anonymous = httpx.get(f"{bridge_url}/reply/user-alice", params={"query": "x"}, timeout=10)
        assert anonymous.status_code == 401
        assert httpx.get(f"http://127.0.0.1:{ports['5005']}/status", timeout=10).status_code == 401
    finally:
        llm.stop()
