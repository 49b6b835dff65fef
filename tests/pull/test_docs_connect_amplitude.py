"""Every block of docs/connect-amplitude.md, run against a live receiver (read out of the page)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import ROOT
from tests.docblocks import Block, code_blocks, one_block
from tests.pull.helpers import register_project
from tests.sdk013 import sdk013

PAGE = "docs/connect-amplitude.md"
HERE = "http://localhost:8000"
VENV_BIN = Path(sys.executable).parent


def _shell(block: Block, base: str, env: dict[str, str], path_first: Path = VENV_BIN) -> str:
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.text.replace(HERE, base)],
        env={**os.environ, "PATH": f"{path_first}:{os.environ['PATH']}", **env},
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_every_block_is_covered_here() -> None:
    assert [b.lang for b in code_blocks(PAGE)] == ["python", "bash", "bash", "bash", "bash"]


def test_registration_with_the_stock_sdk(receiver: Any) -> None:
    block = one_block(PAGE, "AmplitudeProvider", "python")
    proc = subprocess.run(
        [str(sdk013.require()), "-c", block.text.replace(HERE, receiver.base_url)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "provider: amplitude" in proc.stdout and "Authorization: Bearer <ingest_secret>" in proc.stdout


def test_registration_with_the_cli(receiver: Any, database_url: str) -> None:
    out = _shell(one_block(PAGE, "receiver product create", "bash"), receiver.base_url,
                 {"RECEIVER_DATABASE_URL": database_url, "RECEIVER_PUBLIC_URL": receiver.base_url})
    fields = dict(line.split(None, 1) for line in out.splitlines() if " " in line)
    assert fields["provider"] == "amplitude" and fields["provider_project_id"] == "554433"
    assert fields["ingest_url"].startswith(f"{receiver.base_url}/ingest/prod_")


def test_the_template_command_prints_the_sdks_template() -> None:
    sdk_bin = sdk013.require().parent
    out = _shell(one_block(PAGE, "activity-amplitude", "bash"), HERE, {}, path_first=sdk_bin)
    assert out.startswith('<#setting number_format="0.####">')
    assert '"events": [' in out and "$autocapture" in out and "$button_text" in out
    assert "```" not in out


def test_an_event_as_the_template_renders_it_comes_back(receiver: Any) -> None:
    p = register_project(receiver.base_url, "amplitude")
    env = {"INGEST_URL": p.ingest_url, "INGEST_SECRET": p.ingest_secret,
           "PRODUCT_ID": p.product_id, "MCP_KEY": p.mcp_key}
    answer = json.loads(_shell(one_block(PAGE, "$INGEST_URL", "bash"), receiver.base_url, env))
    assert answer == {"status": "ok", "duplicate": False, "position": 1}
    assert '{"status":"ok","duplicate":false,"position":1}' in (ROOT / PAGE).read_text()
    live = json.loads(_shell(one_block(PAGE, "live-activity", "bash"), receiver.base_url, env))
    [action] = live["actions"]
    assert action["title"] == "Click Upgrade plan button"
    assert action["session_id"] == "d-7f3a"  # session -1: the device id
    assert action["email"] == "jane@example.com"
    assert action["canonical_url"] == "https://app.example.com/billing"
