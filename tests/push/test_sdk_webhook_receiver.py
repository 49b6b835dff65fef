"""The stock ``autoplay_sdk.WebhookReceiver`` of 0.7.2 (this venv) and of 0.13.0
(``.venv-sdk013``) receives every push, verified and parsed, in order per session.

The endpoint is the FastAPI code shown in docs/push.md, unchanged, served by uvicorn in a
process of the SDK's own venv; the harness only adds a callback (through the receiver's public
``on_actions``) that writes what the SDK parsed to a file.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, LiveReceiver, free_port
from tests.docblocks import one_block
from tests.faults.kit import hog_event, new_product_id, wait_for
from tests.push.helpers import FAST, dead_positions, post_events, push_product
from tests.sdk013 import sdk013

DOC = ROOT / "docs" / "push.md"
SECRET = "stock-webhook-receiver-secret-42"

HARNESS = '''
import json, os
import uvicorn

{snippet}

_out = open(os.environ["RECORD_TO"], "a", buffering=1)


async def _record(payload):
    _out.write(json.dumps({{
        "product_id": payload.product_id, "session_id": payload.session_id,
        "user_id": payload.user_id, "count": payload.count, "forwarded_at": payload.forwarded_at,
        "conversation_id": getattr(payload, "conversation_id", None),
        "actions": [{{
            "index": a.index, "type": a.type, "title": a.title, "description": a.description,
            "timestamp_start": a.timestamp_start, "canonical_url": a.canonical_url,
            "session_id": a.session_id, "conversation_id": getattr(a, "conversation_id", None),
        }} for a in payload.actions],
    }}) + "\\n")
    await on_actions(payload)  # the page's own callback runs too


receiver.on_actions(_record)
uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]), log_level="warning")
'''


def _interpreter(version: str) -> str:
    return sys.executable if version == "0.7.2" else str(sdk013.require())


@pytest.fixture
def sdk_endpoint(tmp_path: Path) -> Iterator[Callable[[str], tuple[str, Path]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(version: str) -> tuple[str, Path]:
        snippet = one_block(DOC, "WebhookReceiver(secret=", "python").text
        record = tmp_path / f"received-{version}.jsonl"
        port = free_port()
        proc = subprocess.Popen(
            [_interpreter(version), "-c", HARNESS.format(snippet=snippet)],
            env={**os.environ, "CONNECTOR_SECRET": SECRET, "RECORD_TO": str(record),
                 "PORT": str(port)},
            stdout=(tmp_path / f"endpoint-{version}.log").open("wb"), stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError((tmp_path / f"endpoint-{version}.log").read_text())
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the SDK endpoint did not start")
            time.sleep(0.05)
        return f"http://127.0.0.1:{port}/autoplay", record

    yield start
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _received(record: Path) -> list[dict[str, Any]]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("version", ["0.7.2", "0.13.0"])
def test_the_stock_webhook_receiver_verifies_and_receives_every_action_in_order(
    version: str, receiver_factory: Callable[..., LiveReceiver], database_url: str,
    sdk_endpoint: Callable[[str], tuple[str, Path]],
) -> None:
    if version == "0.13.0":
        sdk013.require()
    live = receiver_factory(**FAST)
    url, record = sdk_endpoint(version)
    product = push_product(live.base_url, url, new_product_id("sdk"), secret=SECRET)
    run = product.product_id
    sessions = [f"{run}-a", f"{run}-b", f"{run}-c"]
    pages = ["projects/1/settings", "team", "billing", "projects/2", "dashboard"]
    with httpx.Client(timeout=10) as client:
        for i in range(30):  # interleaved sessions, clicks and page views
            body = hog_event(run, i, session_id=sessions[i % 3],
                             current_url=f"https://app.example.com/{pages[i % 5]}")
            if i % 2:
                body.update(event="$autocapture", event_type="click",
                            elements_chain=f'button:text="Button {i}"nth-child="1"nth-of-type="1"',
                            button_or_link_text=f"Button {i}")
            r = client.post(product.webhook_url, json=body,
                            headers={"x-posthog-secret": product.webhook_secret})
            assert r.status_code == 200, r.text
        # Linked mid-session: later payloads of session a carry the conversation.
        r = client.post(f"{live.base_url}/sessions/link", json={
            "product_id": run, "session_id": sessions[0], "conversation_id": "conv-77",
            "token": product.capture_token})
        assert r.status_code == 200, r.text
        linked = post_events(product, run, range(30, 33), session_id=sessions[0])

    got = wait_for(lambda: len(_received(record)) >= 33 and _received(record), timeout=60,
                   what=f"33 payloads through the {version} WebhookReceiver")
    assert len(got) == 33
    assert all(p["product_id"] == run and p["count"] == 1 == len(p["actions"]) for p in got)
    by_session: dict[str, list[int]] = {}
    for p in got:
        assert p["actions"][0]["session_id"] == p["session_id"]
        by_session.setdefault(p["session_id"], []).append(p["actions"][0]["index"])
    # Every action, in order per session (the SDK's index counts each session's actions).
    assert by_session == {sessions[0]: list(range(13)), sessions[1]: list(range(10)),
                          sessions[2]: list(range(10))}
    clicks = [p["actions"][0] for p in got if p["actions"][0]["type"] == "click"]
    assert len(clicks) == 15 and clicks[0]["title"] == "Click Button 1 button"
    assert [p["conversation_id"] for p in got[-3:]] == ["conv-77"] * 3
    assert [p["actions"][0]["conversation_id"] for p in got[-3:]] == ["conv-77"] * 3
    assert all(p["conversation_id"] is None for p in got[:-3])
    assert sorted(linked) == linked and dead_positions(database_url, run) == []

    # A product whose secret the endpoint does not have: the stock receiver answers 401, which
    # is final, so its payload is dead-lettered, not retried.
    other = push_product(live.base_url, url, new_product_id("sdk-bad"),
                         secret="not-the-endpoint-secret-000")
    bad = post_events(other, other.product_id, range(1))
    wait_for(lambda: dead_positions(database_url, other.product_id) == bad,
             what="the 401 dead-lettered")
    status = httpx.get(f"{live.base_url}/admin/api/push/{other.product_id}").json()
    assert status["dead_letters"][0]["last_status"] == 401
    assert len(_received(record)) == 33
