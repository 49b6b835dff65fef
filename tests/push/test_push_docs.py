"""Every command and snippet of docs/push.md, run as the page shows it (read from the page with
``tests/docblocks.py``). The FastAPI endpoint is served under both SDK versions by
``test_sdk_webhook_receiver.py``; the page's JavaScript runs in Chromium in
``tests/browser/test_session_link.py``."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from typing import Any

import orjson

from tests.conftest import ROOT, VENV_BIN, LiveReceiver
from tests.docblocks import code_blocks, one_block
from tests.faults.kit import sql
from tests.push.endpoint import serve_endpoint
from tests.push.helpers import FAST, assert_signed, post_events, push_product

DOC = ROOT / "docs" / "push.md"


def _bash(text: str, **env: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", text], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", **env}, cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, f"{text}\n---\n{proc.stdout}\n{proc.stderr}"
    return proc


def _python(text: str, **env: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(VENV_BIN / "python"), "-c", text], capture_output=True, text=True, timeout=60,
        env={**os.environ, **env}, cwd=ROOT, check=False,
    )
    assert proc.returncode == 0, f"{text}\n---\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_every_block_of_the_page_is_covered() -> None:
    """A new block must get a test here (or in the two files named above)."""
    covered = ("curl -sS -X POST \"$RECEIVER_URL/products\"", "build_register_payload_from_cli",
               '"type":"actions"', "X-Connector-Signature: sha256=", "WebhookReceiver(secret=",
               "def verify(secret", "receiver push rotate", "receiver push status",
               "/sessions/link\" -H", "receiver product session-link", "function linkConversation")
    for block in code_blocks(DOC):
        assert any(c in block.text for c in covered), f"untested block at {block.where()}"


def test_the_page_commands_against_a_live_receiver(
    receiver_factory: Callable[..., LiveReceiver], database_url: str
) -> None:
    live = receiver_factory(**FAST)
    env = {"RECEIVER_URL": live.base_url, "RECEIVER_DATABASE_URL": database_url}
    # Register: the receiver generates the secret and shows it once.
    out = json.loads(_bash(one_block(DOC, '"$RECEIVER_URL/products"', "bash").text, **env).stdout)
    assert out["product_id"] == "acme"
    assert out["push"]["url"] == "https://hooks.acme.example/autoplay"
    assert out["push"]["secret"].startswith("whsec_")
    assert sql(database_url, "SELECT count(*) FROM push_endpoints WHERE product_id = 'acme'")[0][0] == 1

    # Link a session with the capture token, then let the stock snippet link without one.
    linked = _bash(one_block(DOC, "/sessions/link\" -H", "bash").text,
                   CAPTURE_TOKEN=out["capture_token"], **env)
    assert json.loads(linked.stdout)["status"] == "linked"
    _bash(one_block(DOC, "receiver product session-link", "bash").text, **env)
    assert sql(database_url, "SELECT session_link FROM products WHERE product_id = 'acme'")[0][0] == "open"

    rotated = _bash(one_block(DOC, "receiver push rotate", "bash").text, **env).stdout
    assert "whsec_" in rotated and "shown only once" in rotated
    row = sql(database_url, "SELECT secret, previous_secret FROM push_endpoints")[0]
    assert row["previous_secret"] == out["push"]["secret"] and row["secret"] in rotated

    for line in one_block(DOC, "receiver push status", "bash").text.splitlines():
        result = _bash(line, **env)
        assert "error" not in result.stderr.lower(), line
    status = _bash("receiver push status acme --json", **env).stdout
    assert json.loads(status)["url"] == "https://hooks.acme.example/autoplay"
    assert out["push"]["secret"] not in status and row["secret"] not in status


def test_registering_with_the_sdk_helpers_then_what_arrives(
    receiver_factory: Callable[..., LiveReceiver], database_url: str
) -> None:
    live = receiver_factory(**FAST)
    secret = "forward-secret-from-the-sdk-helper"
    with serve_endpoint() as ep:
        printed = _python(one_block(DOC, "build_register_payload_from_cli", "python").text,
                          RECEIVER_URL=live.base_url, PUSH_URL=ep.url, PUSH_SECRET=secret).stdout
        assert ep.url in printed and secret not in printed
        row = sql(database_url, "SELECT url, secret FROM push_endpoints WHERE product_id = $1",
                  "acme-push")[0]
        assert (row["url"], row["secret"]) == (ep.url, secret)
        # Registering again (same destination and secret: no rotation) hands us the webhook
        # secret the helper's answer held, to post events with.
        product = push_product(live.base_url, ep.url, "acme-push", secret=secret, force=True)
        post_events(product, "docs", range(2))
        got = ep.wait_for(lambda reqs: len(reqs) >= 2 and reqs)
    assert_signed(got, secret)
    payload = got[0].json()

    # The example body has exactly the keys of a real one, top level and action.
    example = orjson.loads(one_block(DOC, '"type":"actions"', "json").text.replace("\n", ""))
    assert set(example) == set(payload)
    assert set(example["actions"][0]) == set(payload["actions"][0])
    # The example headers are those sent.
    lines = one_block(DOC, "X-Connector-Signature: sha256=", "http").text.strip().splitlines()
    names = {line.split(":", 1)[0].lower() for line in lines}
    assert names <= set(got[0].headers), names - set(got[0].headers)
    assert got[0].headers["webhook-id"] == f"acme-push:{payload['position']}"

    # The Standard Webhooks snippet: accepts what was sent, refuses anything altered.
    scope: dict[str, Any] = {}
    exec(one_block(DOC, "def verify(secret", "python").text, scope)  # noqa: S102 - the page's code
    verify = scope["verify"]
    assert verify(secret, got[0].body, got[0].headers) == payload
    assert verify(secret, got[0].body + b" ", got[0].headers) is None
    assert verify("some-other-secret-entirely", got[0].body, got[0].headers) is None
    assert verify(secret, got[1].body, got[0].headers) is None  # another event's signature
