"""Structured logs: request ids (honoured, generated, echoed), JSON lines, nothing secret."""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from receiver.ops import logging as rlog


def click(email: str = "carol.secret@example.com") -> dict[str, Any]:
    return {
        "event": "$autocapture", "event_type": "click", "uuid": str(uuid.uuid4()),
        "distinct_id": "u-1", "session_id": "s-1", "email": email,
        "current_url": "https://app.example.com/", "elements_chain": 'button:text="Go"',
    }


def test_request_ids_are_honoured_generated_and_echoed(receiver: Any) -> None:
    base = receiver.base_url
    r = httpx.get(f"{base}/healthz", headers={"X-Request-ID": "req-abc.123:x_y"})
    assert r.headers["x-request-id"] == "req-abc.123:x_y"
    r = httpx.get(f"{base}/healthz")
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])
    assert httpx.get(f"{base}/healthz").headers["x-request-id"] != r.headers["x-request-id"]
    for bad in ("a" * 129, "has space", "semi;colon", "<script>"):
        r = httpx.get(f"{base}/healthz", headers={"X-Request-ID": bad})
        assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"]), bad
    # Errors carry it too.
    r = httpx.post(f"{base}/webhook/nope", json={}, headers={"X-Request-ID": "err-1"})
    assert r.status_code == 404 and r.headers["x-request-id"] == "err-1"


def test_scrub_masks_emails_and_secrets() -> None:
    text = rlog.scrub(
        "user carol.secret@example.com sent Authorization: Bearer s3cr3t-admin-token with "
        "rsk_AbCdEfGhIjKlMnOp and phc_ZyXwVuTsRq ?ticket=1234567.deadbeef&since=0 token=abcdef"
    )
    for secret in ("carol.secret@", "s3cr3t-admin-token", "rsk_AbCdEfGhIjKlMnOp", "phc_ZyXwVuTsRq",
                   "deadbeef", "abcdef"):
        assert secret not in text, secret
    assert "c***@example.com" in text


def test_filter_scrubs_messages_arguments_extras_and_tracebacks() -> None:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(rlog.JsonFormatter())
    handler.addFilter(rlog.RequestIdFilter())
    log = logging.getLogger("tests.ops.scrub")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.DEBUG)
    token = rlog.request_id_var.set("rid-7")
    try:
        log.info("hello %s", "dave@example.com", extra={"who": "erin@example.com"})
        try:
            raise ValueError("bad key rsk_0123456789abcdef for frank@example.com")
        except ValueError:
            log.exception("failed")
    finally:
        rlog.request_id_var.reset(token)
        log.removeHandler(handler)
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert lines[0]["request_id"] == "rid-7" and lines[0]["msg"] == "hello d***@example.com"
    assert lines[0]["who"] == "e***@example.com"
    assert "rsk_0123456789abcdef" not in lines[1]["exc"] and "frank@" not in lines[1]["exc"]
    assert "ValueError" in lines[1]["exc"]


@pytest.mark.slow
def test_json_logs_with_request_ids_and_no_secrets(
    spawn_receiver: Callable[..., Any], database_url: str
) -> None:
    admin_token = "admin-" + uuid.uuid4().hex
    proc = spawn_receiver(
        RECEIVER_LOG_JSON="true", RECEIVER_ADMIN_TOKEN=admin_token, RECEIVER_LOG_LEVEL="DEBUG"
    )
    base = proc.base_url
    admin = {"Authorization": f"Bearer {admin_token}"}
    r = httpx.post(f"{base}/products", json={"product_id": "logs", "contact_email": "grace@example.com"},
                   headers=admin)
    assert r.status_code == 201
    creds = r.json()
    r = httpx.post(f"{base}/webhook/logs", json=click(), headers={
        "x-posthog-secret": creds["webhook_secret"], "X-Request-ID": "trace-42",
    })
    assert r.status_code == 200 and r.headers["x-request-id"] == "trace-42"
    # Failed credentials of every kind.
    wrong = {"x-posthog-secret": "wrong-" + creds["webhook_secret"]}
    httpx.post(f"{base}/webhook/logs", json=click(), headers=wrong)
    httpx.get(f"{base}/stream/logs", headers={"Authorization": "Bearer rsk_wrongwrongwrongwrong"})
    ticket = httpx.post(f"{base}/admin/api/stream-ticket/logs", headers=admin).json()["ticket"]
    with httpx.stream("GET", f"{base}/admin/api/stream/logs?ticket={ticket}&since=0") as s:
        assert s.status_code == 200
        for line in s.iter_lines():
            if line.startswith("data:"):
                break

    proc.terminate()
    log = proc.log()
    records = []
    for line in log.splitlines():
        if line.startswith("receiver listening on") or line.startswith("embedded postgres"):
            continue  # the CLI's own console lines
        records.append(json.loads(line))  # every log line is one JSON object
    access = [r for r in records if r["logger"] == "receiver.access"]
    [mine] = [r for r in access if r.get("request_id") == "trace-42"]
    assert mine["status"] == 200 and mine["route"] == "/webhook/{product_id}"
    assert mine["product_id"] == "logs" and mine["method"] == "POST" and mine["duration_ms"] >= 0
    assert all(r["level"] in {"debug", "info", "warning", "error", "critical"} for r in records)
    assert len({r["request_id"] for r in access}) == len(access)  # one id per request
    assert any(r["path"] == "/admin/api/stream/logs" for r in access)

    for secret in (admin_token, creds["webhook_secret"], creds["unkey_key"], "rsk_wrongwrongwrongwrong",
                   ticket, ticket.split(".")[1], "carol.secret@example.com", "grace@example.com"):
        assert secret not in log, secret


def test_text_logs_cannot_be_forged_with_control_characters(
    spawn_receiver: Callable[..., Any]
) -> None:
    """A path (or any logged value) with %0a, %0d or an escape sequence stays on its record's
    line, written as \\n, \\r, \\x1b: no client can start a fake record or recolour the
    terminal. (Found by the issue 14 audit: text logs were forgeable with %0a.)"""
    proc = spawn_receiver(RECEIVER_LOG_JSON="false")
    forged = "2026-01-01 00:00:00,000 INFO receiver.access [-]: GET /admin 200"
    for path in ("/x%0a" + forged.replace(" ", "%20"), "/y%0d%0a" + forged.replace(" ", "%20"),
                 "/z%1b%5b31mred", "/w%e2%80%a8sep%c2%85nel"):
        assert httpx.get(f"{proc.base_url}{path}").status_code == 404
    proc.terminate()
    lines = proc.log().splitlines()
    record = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \S+ \[[^\]]*\]: ")
    # What the console says to a person (not log records): where it listens, and the next step.
    console = ("receiver listening on", "embedded postgres", "No product yet. In another terminal",
               "  .venv/bin/receiver product create ", "It prints what to paste where")
    stray = [line for line in lines if not record.match(line) and not line.startswith(console)]
    assert stray == [], stray
    access = [line for line in lines if "receiver.access" in line and "GET /" in line]
    assert len(access) == 4, access
    assert any("/x\\n2026-01-01" in line for line in access)
    assert any("/y\\r\\n2026-01-01" in line for line in access)
    assert any("/z\\x1b[31mred" in line for line in access)
    assert any("/w\\u2028sep\\x85nel" in line for line in access)
    assert "\x1b" not in proc.log()
