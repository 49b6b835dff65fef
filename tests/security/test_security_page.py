"""docs/security.md: every limit it names is a real setting with the default it states, every
setting that bounds a request is on the page, and every command and snippet on it is run."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from typing import Any

import yaml

from receiver.settings import Settings
from tests.conftest import ROOT
from tests.docblocks import code_blocks, one_block
from tests.faults.kit import nodelay

PAGE = ROOT / "docs" / "security.md"
LIMITS = (
    "max_body_bytes", "max_decompressed_bytes", "max_events_per_request", "max_request_nodes",
    "max_event_nodes", "max_json_depth", "max_string_chars", "body_timeout_seconds",
    "offload_bytes", "offload_queue", "ingest_rate_limit", "ingest_burst",
    "ingest_bytes_rate_limit", "ingest_bytes_burst", "auth_fail_limit",
    "auth_fail_window_seconds", "header_timeout_seconds", "max_header_bytes", "max_connections",
    "max_concurrent_requests", "admin_token", "admin_allow_loopback",
)


def table_rows() -> dict[str, str]:
    """``RECEIVER_X`` → the default column of the limits table."""
    rows = {}
    for line in PAGE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`RECEIVER_"):
            names = re.findall(r"`(RECEIVER_[A-Z_]+)`", cells[0])
            defaults = [d.strip(" `") for d in re.sub(r"\(off\)", "", cells[1]).split("/")]
            rows.update(zip(names, defaults, strict=True))
    return rows


def test_the_page_names_every_limit_with_its_real_default() -> None:
    rows = table_rows()
    defaults = Settings.model_fields
    page = PAGE.read_text()
    for name in LIMITS:
        env = f"RECEIVER_{name.upper()}"
        assert f"`{env}`" in page, env
        if env in rows:
            default = defaults[name].default
            shown = rows[env]
            assert float(shown) == float(default), (env, shown, default)


def test_token_command_makes_an_acceptable_admin_token() -> None:
    block = one_block(PAGE, "openssl rand", lang="bash")
    out = subprocess.run(["bash", "-c", block.text], capture_output=True, text=True, check=True,
                         timeout=30).stdout.strip()
    assert Settings(admin_token=out).admin_token is not None  # long enough, not refused


def test_compose_env_snippet_lists_what_compose_requires() -> None:
    block = one_block(PAGE, "BRIDGE_REPLY_TOKEN=", lang="env")
    shown = {line.split("=", 1)[0] for line in block.text.splitlines() if "=" in line}
    compose = (ROOT / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{([A-Z_]+):\?", compose)) - {"POSTGRES_PASSWORD"}
    assert shown == required, (shown, required)
    example = (ROOT / ".env.example").read_text()
    assert all(re.search(rf"^{name}=$", example, re.M) for name in shown)
    yaml.safe_load(compose)


def test_rebinding_curl_is_refused_as_shown(receiver_factory: Callable[..., Any]) -> None:
    live = nodelay(receiver_factory(admin_token=""))
    block = one_block(PAGE, "rebind.attacker.example", lang="bash")
    port = str(live.settings.port)
    command = block.text.replace("8000", port)
    out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=True,
                         timeout=30).stdout
    answer = json.loads(out)
    assert answer["code"] == "forbidden"
    # The page quotes the start of this very answer.
    quoted = PAGE.read_text().split("answers `", 1)[1].split("…", 1)[0]
    assert " ".join(quoted.split()).removeprefix('{"detail":"') in answer["detail"]


def test_every_block_on_the_page_is_run_by_a_test() -> None:
    blocks = code_blocks(PAGE)
    covered = ("openssl rand", "BRIDGE_REPLY_TOKEN=", "rebind.attacker.example")
    for block in blocks:
        assert any(c in block.text for c in covered), block.where()
