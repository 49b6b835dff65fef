"""Every block of docs/connect-agent.md, run against a live receiver (read out of the page, not copied).

``http://localhost:8000`` on the page is the reader's receiver; here it is the live one. Shell blocks
run with ``PRODUCT_ID``, ``USER_ID`` and ``MCP_KEY`` set, as the page says; the Python blocks run on
the stock autoplay-sdk 0.13.0 (onboarding) and on the official MCP SDK (client); the JavaScript
block on Node with the official TypeScript SDK (``scripts/mcp-node-deps.sh``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT
from tests.docblocks import Block, code_blocks, one_block
from tests.pull.helpers import Registered, hog, register_project
from tests.sdk013 import sdk013
from tests.unavailable import unavailable

PAGE = "docs/connect-agent.md"
HERE = "http://localhost:8000"
VENV_BIN = Path(sys.executable).parent


def _shell(block: Block, base: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.text.replace(HERE, base)],
        env={**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", **env},
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )


def _seeded(receiver: Any) -> tuple[Registered, dict[str, str]]:
    p = register_project(receiver.base_url)
    user = "user-" + uuid.uuid4().hex[:6]
    session = str(uuid.uuid4())
    assert p.post({"batch": [
        hog("$pageview", user=user, session=session, url="https://app.example.com/team/42?tab=members"),
        hog("$autocapture", user=user, session=session, url="https://app.example.com/team/42",
            text="Invite member"),
    ]}).status_code == 200
    return p, {"PRODUCT_ID": p.product_id, "USER_ID": user, "MCP_KEY": p.mcp_key}


def test_every_block_is_covered_here() -> None:
    handled = {"python": 2, "bash": 3, "json": 1, "text": 1, "js": 1}
    found: dict[str, int] = {}
    for block in code_blocks(PAGE):
        found[block.lang] = found.get(block.lang, 0) + 1
    assert found == handled, "a block was added to the page: run it in this file"


def test_onboarding_with_the_stock_0_13_0_sdk(receiver: Any) -> None:
    block = one_block(PAGE, "onboard_product", "python")
    proc = subprocess.run(
        [str(sdk013.require()), "-c", block.text.replace(HERE, receiver.base_url)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for field in ("Ingest URL", "ingest_secret", "MCP URL", "mcp_key", "owner_token"):
        assert field in out, out
    assert f"{receiver.base_url}/mcp" in out and f"{receiver.base_url}/ingest/prod_" in out


def test_onboarding_with_the_cli(receiver: Any, database_url: str) -> None:
    block = one_block(PAGE, "receiver product create", "bash")
    proc = _shell(block, receiver.base_url, {
        "RECEIVER_DATABASE_URL": database_url, "RECEIVER_PUBLIC_URL": receiver.base_url,
    })
    assert proc.returncode == 0, proc.stderr[-3000:]
    fields = dict(line.split(None, 1) for line in proc.stdout.splitlines() if line and " " in line)
    assert fields["product_id"].startswith("prod_") and fields["provider_project_id"] == "81234"
    assert fields["mcp_url"] == f"{receiver.base_url}/mcp"
    assert fields["mcp_key"].startswith("rmk_") and fields["owner_token"].startswith("rot_")
    assert fields["ingest_url"] == f"{receiver.base_url}/ingest/{fields['product_id']}"


def test_curl_answers_what_the_page_shows(receiver: Any) -> None:
    _, env = _seeded(receiver)
    proc = _shell(one_block(PAGE, "live-activity", "bash"), receiver.base_url, env)
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    shown = json.loads(one_block(PAGE, '"actions"', "json").text)
    assert set(answer) == set(shown)
    assert set(answer["actions"][0]) == set(shown["actions"][0])
    assert answer["limit"] == shown["limit"] == 10 and answer["since_seconds"] == shown["since_seconds"]
    assert [a["title"] for a in answer["actions"]] == ["Page Load: Team", shown["actions"][0]["title"]]
    assert answer["actions"][1]["canonical_url"] == shown["actions"][0]["canonical_url"]


def test_the_python_client(receiver: Any) -> None:
    _, env = _seeded(receiver)
    block = one_block(PAGE, "streamable_http_client", "python")
    proc = subprocess.run(
        [sys.executable, "-c", block.text.replace(HERE, receiver.base_url)],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"Recent in-app activity of user '{env['USER_ID']}'")
    assert "User clicked Invite member button on the team page" in lines[2]
    assert lines[-1] == "Current page (the latest action's): https://app.example.com/team/:id"


def test_the_typescript_client(receiver: Any, tmp_path: Path) -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        unavailable("node and npm are needed (apt-get install nodejs npm)")
    deps = subprocess.run(["bash", "scripts/mcp-node-deps.sh"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert deps.returncode == 0, deps.stderr[-2000:]
    _, env = _seeded(receiver)
    script = tmp_path / "client.mjs"
    script.write_text(one_block(PAGE, "StreamableHTTPClientTransport", "js").text.replace(
        HERE, receiver.base_url))
    (tmp_path / "node_modules").symlink_to(ROOT / "tests" / "mcp_node" / "node_modules")
    proc = subprocess.run(["node", str(script)], env={**os.environ, **env}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == "get_live_user_activity, get_user_sessions, find_users_who"
    assert lines[1].startswith(f"Recent in-app activity of user '{env['USER_ID']}'")
    assert "Invite member" in proc.stdout


def test_the_prompt_names_real_tools_and_arguments(receiver: Any) -> None:
    text = one_block(PAGE, "get_live_user_activity", "text").text
    from receiver.delivery.mcp import TOOLS

    assert TOOLS[0] in text and "user_id" in text and "product_id" in text


@pytest.mark.parametrize("setting", [
    "RECEIVER_LIVE_ACTIVITY_LIMIT", "RECEIVER_LIVE_ACTIVITY_MAX_LIMIT",
    "RECEIVER_LIVE_ACTIVITY_WINDOW_SECONDS", "RECEIVER_READ_POOL_SIZE", "RECEIVER_READ_TIMEOUT_MS",
    "RECEIVER_READ_RATE_LIMIT", "RECEIVER_READ_BURST", "RECEIVER_MCP_ALLOWED_ORIGINS",
    "RECEIVER_MCP_TOOLS",
])
def test_the_page_documents_each_setting_it_relies_on(setting: str) -> None:
    from receiver.settings import Settings

    assert setting.removeprefix("RECEIVER_").lower() in Settings.model_fields
    assert f"`{setting}`" in (ROOT / PAGE).read_text()


def test_the_bridge_in_pull_mode(receiver: Any, tmp_path: Path) -> None:
    from tests.conftest import free_port
    from tests.fakes.llm import FakeLLM

    _, env = _seeded(receiver)
    port = free_port()
    block = one_block(PAGE, "bridge serve", "bash")
    script = block.text.replace(HERE, receiver.base_url).replace("--port 8090", f"--port {port}")
    llm = FakeLLM().start()
    proc = subprocess.Popen(
        ["bash", "-c", script],
        env={**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", **env,
             "BRIDGE_LLM_BASE_URL": llm.base_url, "BRIDGE_LLM_API_KEY": "test",
             "BRIDGE_LLM_MAX_RETRIES": "0", "REPLY_TOKEN": "reply-token-of-the-docs-test"},
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # its own process group: stopped whole below
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            try:
                if httpx.get(f"{base}/healthz", timeout=1).json().get("mode") == "pull":
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "bridge did not start"
            time.sleep(0.1)
        reply = httpx.get(f"{base}/reply/{env['USER_ID']}", params={"query": "what now?"},
                          headers={"Authorization": "Bearer reply-token-of-the-docs-test"},
                          timeout=30).json()
        assert reply["has_activity"] is True
        assert "Invite member" in reply["reply"]
        assert httpx.get(f"{base}/healthz", timeout=5).json()["pulls"] == 1
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        llm.stop()
