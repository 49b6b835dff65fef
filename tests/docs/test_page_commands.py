"""The commands and snippets the pages show, run as a reader would run them, against a real
receiver and a real Postgres; each prints what the page says and nothing the reader did not ask for.

Blocks are read out of the pages (``tests/docblocks.py``), never copied. Where a page uses the
defaults a reader has (``http://127.0.0.1:8000``, placeholders such as ``<stream_key>``), the
test substitutes the live receiver's URL and the product's real credentials, and says so.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from receiver.storage import store
from tests.docblocks import one_block
from tests.sql.seed import seed_story

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DEFAULT_BASE = "http://127.0.0.1:8000"
NOISE = re.compile(r"Traceback|Warning|WARNING|DEPRECAT|\bINFO\b|alembic|embedded postgres", re.I)


def reader_env(**extra: str) -> dict[str, str]:
    """A reader's shell: the project's virtualenv first on PATH, no RECEIVER_* left over."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECEIVER_", "BRIDGE_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def sh(script: str, *, cwd: Path = ROOT, timeout: float = 120, **env: str,
       ) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=reader_env(**env),
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False,
    )
    assert res.returncode == 0, f"{script}\n--- stdout\n{res.stdout}\n--- stderr\n{res.stderr}"
    return res


def quiet(res: subprocess.CompletedProcess[str]) -> None:
    """Nothing on stderr, and no warning, traceback or log line anywhere."""
    assert res.stderr == "", res.stderr
    assert not NOISE.search(res.stdout), res.stdout


def lines_until(proc: subprocess.Popen[bytes], wanted: str, deadline_s: float) -> list[str]:
    """Read ``proc``'s stdout until a line contains ``wanted`` (select with a deadline; no sleeps)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    seen: list[str] = getattr(proc, "seen_lines", [])
    buf: str = getattr(proc, "partial_line", "")
    end = time.monotonic() + deadline_s
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while time.monotonic() < end:
                if not sel.select(timeout=max(0.0, end - time.monotonic())):
                    continue
                chunk = os.read(fd, 65536).decode()
                if not chunk:
                    break
                *done, buf = (buf + chunk).split("\n")
                seen += done
                if any(wanted in line for line in done):
                    return seen
        raise AssertionError(f"{wanted!r} never came; got {[*seen, buf]}")
    finally:
        proc.seen_lines, proc.partial_line = seen, buf  # type: ignore[attr-defined]


def stop(proc: subprocess.Popen[bytes]) -> str:
    proc.terminate()
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return (err or b"").decode()


# --------------------------------------------------------------------------- getting started


def test_first_event_and_first_stream_as_the_page_shows(receiver: Any, make_product: Any) -> None:
    product = make_product("my-app")
    exports = one_block("docs/getting-started.md", "export WEBHOOK_URL", "bash").text
    # The page's values are a reader's defaults and placeholders: fill in this receiver's.
    exports = (exports.replace(DEFAULT_BASE, receiver.base_url)
               .replace("<webhook_secret>", product.webhook_secret)
               .replace("<stream_key>", product.stream_key))
    post = one_block("docs/getting-started.md", 'curl -s -X POST "$WEBHOOK_URL"', "bash").text
    res = sh(exports + post)
    quiet(res)
    shown = one_block("docs/getting-started.md", '"duplicate":false', "text").text
    assert json.loads(res.stdout) == json.loads(shown)

    stream = one_block("docs/getting-started.md", 'curl -sN "$STREAM_URL?since=0"', "bash").text
    proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", exports + stream], cwd=ROOT,
                            env=reader_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lines = lines_until(proc, "Click Invite member button", 20)
    finally:
        err = stop(proc)
    assert lines[:2] == ["event: heartbeat", "data:"], lines
    assert "id: 1" in lines
    frame = json.loads(next(line for line in lines if line.startswith("data: {"))[len("data: "):])
    assert frame["type"] == "actions" and frame["user_id"] == "user-1" and frame["session_id"] == "s1"
    assert err == ""


def test_onboard_product_from_python_as_the_page_shows(receiver: Any) -> None:
    code = one_block("docs/getting-started.md", "onboard_product(", "python").text
    code = code.replace(DEFAULT_BASE, receiver.base_url)
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=reader_env(), capture_output=True,
                         text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    quiet(res)
    assert res.stdout.split() == [f"{receiver.base_url}/webhook/my-app", f"{receiver.base_url}/stream/my-app"]


@pytest.mark.parametrize("page", ["docs/stream.md", "README.md"])
def test_the_stream_example_prints_each_click(page: str, receiver: Any, make_product: Any) -> None:
    product = make_product("my-app")
    examples = {  # the same example on both pages; each is run as shown there
        "docs/stream.md": one_block("docs/stream.md", "AsyncConnectorClient(url=stream_url", "python"),
        "README.md": one_block("README.md", "AsyncConnectorClient(url=stream_url", "python"),
    }
    code = examples[page].text
    code = code.replace(f"{DEFAULT_BASE}/stream/my-app", f"{receiver.base_url}/stream/my-app")
    code = code.replace('"rsk_..."', repr(product.stream_key))
    proc = subprocess.Popen([sys.executable, "-u", "-c", code], cwd=ROOT, env=reader_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # The client connects in the background; post until its first line shows up.
        deadline = time.monotonic() + 30
        while True:
            r = httpx.post(f"{receiver.base_url}/webhook/my-app", timeout=10, json={
                "event": "$autocapture", "event_type": "click", "distinct_id": "user-1",
                "session_id": "s1", "uuid": str(__import__("uuid").uuid4()),
                "current_url": "https://app.example.com/team",
                "elements_chain": 'button:text="Invite member"',
            }, headers={"x-posthog-secret": product.webhook_secret})
            assert r.status_code == 200
            try:
                lines = lines_until(proc, "user-1 Click Invite member button", 1.5)
                break
            except AssertionError:
                assert time.monotonic() < deadline, "the example printed nothing"
    finally:
        err = stop(proc)
    assert "user-1 Click Invite member button" in lines
    assert err == ""  # no warning, no log line, no traceback


# --------------------------------------------------------------------------- the CLI, page by page


@pytest.fixture
def cli_env(database_url: str) -> dict[str, str]:
    return {"RECEIVER_DATABASE_URL": database_url}


def test_capture_token_commands(cli_env: dict[str, str]) -> None:
    res = sh(one_block("docs/connect-posthog.md", "product show my-app", "bash").text, **cli_env)
    quiet(res)
    tokens = re.findall(r"^capture_token\s+(phc_\S+)$", res.stdout, re.M)
    assert len(tokens) == 2 and tokens[0] == tokens[1]  # create prints it, show shows it again


def test_posthog_setup_guide_commands(cli_env: dict[str, str], receiver: Any) -> None:
    res = sh(one_block("posthog/SETUP.md", "export RECEIVER_PUBLIC_URL", "bash").text, **cli_env)
    quiet(res)
    assert re.search(r"^webhook_url\s+https://receiver.example.com/webhook/my-product$", res.stdout, re.M)
    key = re.search(r"^stream_key\s+(\S+)$", res.stdout, re.M).group(1)  # type: ignore[union-attr]
    # The guide's stream check, against this receiver instead of the public name.
    check = one_block("posthog/SETUP.md", "curl -N -H", "bash").text
    check = check.replace("https://receiver.example.com", receiver.base_url)
    proc = subprocess.Popen(["bash", "-c", check], cwd=ROOT, env=reader_env(STREAM_KEY=key),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert lines_until(proc, "event: heartbeat", 20)
    finally:
        stop(proc)


def test_retention_commands(cli_env: dict[str, str]) -> None:
    sh("receiver product create shop --contact-email ops@example.com --json", **cli_env)
    res = sh(one_block("docs/configuration.md", "receiver db retention shop", "bash").text, **cli_env)
    quiet(res)
    assert re.search(r"^retention_days\s+7$", res.stdout, re.M)
    assert re.search(r"^payload_retention_days\s+1$", res.stdout, re.M)
    assert re.search(r"^skipped\s+False$", res.stdout, re.M)  # then db maintain ran


def test_privacy_policy_commands(cli_env: dict[str, str]) -> None:
    sh("receiver product create shop --contact-email ops@example.com --json", **cli_env)
    res = sh(one_block("docs/privacy.md", "receiver product policy shop --reset", "bash").text, **cli_env)
    quiet(res)
    shown = res.stdout.split("product_id")
    assert len(shown) == 7  # six commands, each prints the policy
    assert re.search(r"email\s+hash", shown[2]) and re.search(r"query\s+strip", shown[2])
    assert "ACME-\\d{6}" in shown[3] and "TCK-[0-9]+" in shown[3]
    assert re.search(r"builtin_redactions\s+card_number$", shown[4], re.M)
    assert re.search(r"email\s+keep", shown[6])  # --reset: back to the default


def test_erase_commands(cli_env: dict[str, str], database_url: str) -> None:
    asyncio.run(seed_story(database_url))
    res = sh(one_block("docs/privacy.md", "receiver erase --distinct-id user-42", "bash").text, **cli_env)
    quiet(res)
    assert res.stdout.splitlines() == [
        "removed 0 rows: 0 events of 'user-42' and 0 other events of their sessions (product: (all))",
        "removed 0 rows: 0 events of 'user-42' and 0 other events of their sessions (product: acme)",
    ]


def test_sql_prompt_commands(cli_env: dict[str, str], database_url: str, tmp_path: Path) -> None:
    asyncio.run(seed_story(database_url))
    block = one_block("docs/event-table.md", "receiver sql -v product=acme -f top_clicks.sql", "bash")
    # The page's third line reads the first example query from a file, as an analyst saves it.
    query = one_block("docs/event-table.md", "-- name: top_clicked_elements_per_page", "sql").text
    (tmp_path / "top_clicks.sql").write_text(query)
    res = sh(block.text, cwd=tmp_path, **cli_env)  # `receiver sql` alone: psql, no input, exits
    assert res.stderr == ""
    assert re.search(r"\bday\b.*\busers\b.*\bsessions\b", res.stdout)  # the daily_activity query
    assert "Invite member" in res.stdout and "(5 rows)" in res.stdout


@pytest.fixture
def roles(database_url: str) -> Iterator[None]:
    yield

    async def drop() -> None:
        conn = await asyncpg.connect(store.asyncpg_dsn(database_url))
        try:
            for name in ("analysts", "metabase"):
                if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name):
                    await conn.execute(f'DROP OWNED BY "{name}"')
                    await conn.execute(f'DROP ROLE "{name}"')
        finally:
            await conn.close()

    asyncio.run(drop())


def test_read_only_role_commands(cli_env: dict[str, str], database_url: str, roles: None) -> None:
    res = sh(one_block("docs/event-table.md", "receiver db grant-readonly analysts", "bash").text, **cli_env)
    quiet(res)

    async def check() -> list[Any]:
        conn = await asyncpg.connect(store.asyncpg_dsn(database_url))
        try:
            return await conn.fetch(
                "SELECT rolname, rolcanlogin, has_table_privilege(rolname, 'events', 'SELECT') AS ev, "
                "has_table_privilege(rolname, 'products', 'SELECT') AS pr "
                "FROM pg_roles WHERE rolname IN ('analysts', 'metabase') ORDER BY rolname"
            )
        finally:
            await conn.close()

    assert [tuple(r) for r in asyncio.run(check())] == [
        ("analysts", False, True, False), ("metabase", True, True, False),
    ]
