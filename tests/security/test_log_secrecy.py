"""No secret, stream key or full email ever appears in the logs.

A real ``receiver serve`` at DEBUG level (text, then JSON lines) goes through everything that
handles credentials: product creation (with an SDK-generated secret), webhooks with the right,
a wrong and no secret, events carrying emails, streams with the right and a wrong key, the
failed-auth lockout, re-registration (rotation through the API) and ``receiver product
rotate`` from the CLI. Then every captured log line is searched for each secret, each stream
key, each wrong secret a client sent (usually a typo of the real one) and each full email.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.faults.kit import new_product_id, show

VENV_BIN = Path(sys.executable).parent


async def exercise(base_url: str, product_id: str, contact: str, visitor: str) -> dict[str, str]:
    """Drive every credential-handling path; return the sensitive values used."""
    sdk_secret = secrets.token_urlsafe(32)  # what autoplay_sdk.admin.onboard_product generates
    wrong = "typo-" + secrets.token_urlsafe(24)
    async with httpx.AsyncClient(timeout=10) as ac:
        r = await ac.post(f"{base_url}/products", json={
            "product_id": product_id, "contact_email": contact, "webhook_secret": sdk_secret,
        })
        assert r.status_code == 201, r.text
        created = r.json()
        secret, key = created["webhook_secret"], created["unkey_key"]
        hook = f"{base_url}/webhook/{product_id}"
        body = {"event": "$pageview", "email": visitor, "distinct_id": visitor,
                "current_url": f"https://app.example.com/?email={visitor}&token={secret}"}
        assert (await ac.post(hook, json=body, headers={"x-posthog-secret": secret})).status_code == 200
        assert (await ac.post(hook, json=body)).status_code == 401
        assert (await ac.post(hook, json=body, headers={"x-posthog-secret": wrong})).status_code == 401
        # A bad body from an authenticated sender (its detail is logged nowhere with the body).
        raw = b'{"event": "\\u0001' + visitor.encode() + b'", "session_id": "a\\nb"}'
        bad = await ac.post(hook, content=raw,
                            headers={"x-posthog-secret": secret, "content-type": "application/json"})
        assert bad.status_code == 400
        # Streams: right key (read the first heartbeat), wrong key, key in the query string.
        async with ac.stream("GET", f"{base_url}/stream/{product_id}?since=0",
                             headers={"Authorization": f"Bearer {key}"}) as s:
            assert s.status_code == 200
            async for _chunk in s.aiter_raw():
                break
        bad_key = "rsk_" + secrets.token_urlsafe(32)
        for headers in ({"Authorization": f"Bearer {bad_key}"}, {"Authorization": f"Bearer {secret}"}):
            assert (await ac.get(f"{base_url}/stream/{product_id}", headers=headers)).status_code == 401
        q = await ac.get(f"{base_url}/stream/{product_id}", params={"token": key, "key": key})
        assert q.status_code == 401
        # Keep failing until the lockout answers 429 (default limit: 30 per minute).
        for _ in range(40):
            r = await ac.post(hook, json=body, headers={"x-posthog-secret": wrong})
            if r.status_code == 429:
                break
        assert r.status_code == 429
        # Re-register: rotation through the API (the SDK's force_reregister).
        r = await ac.post(f"{base_url}/products", json={
            "product_id": product_id, "contact_email": contact, "force_reregister": True,
        })
        assert r.status_code == 201, r.text
        rotated = r.json()
        # Duplicate registration: 409 whose detail must not echo credentials.
        r = await ac.post(f"{base_url}/products", json={"product_id": product_id, "contact_email": contact})
        assert r.status_code == 409
        # An invalid registration whose fields carry the secret and the email.
        r = await ac.post(f"{base_url}/products",
                          json={"product_id": f"bad id {secret}", "contact_email": contact})
        assert r.status_code == 400
        # Push: a destination whose URL carries a password and a token, with its own secret;
        # nothing listens there, so deliveries fail, are retried and dead-lettered (logged).
        push_secret = "push-" + secrets.token_urlsafe(24)
        url_password, url_token = "pw-" + secrets.token_hex(8), "qt-" + secrets.token_hex(8)
        push_id = product_id + "-push"
        url = f"http://hook-user:{url_password}@127.0.0.1:{free_port()}/in?token={url_token}"
        r = await ac.post(f"{base_url}/products", json={
            "product_id": push_id, "contact_email": contact,
            "integration_config": {"mode": "push", "url": url, "secret": push_secret},
        })
        assert r.status_code == 201, r.text
        assert push_secret not in r.text and url_password not in r.text and url_token not in r.text
        push_hook_secret = r.json()["webhook_secret"]
        r = await ac.post(f"{base_url}/webhook/{push_id}", json=body,
                          headers={"x-posthog-secret": push_hook_secret})
        assert r.status_code == 200
        for _ in range(200):
            status = (await ac.get(f"{base_url}/admin/api/push/{push_id}")).json()
            if status["dead_letters"]:
                break
            await asyncio.sleep(0.05)
        assert status["dead_letters"], status
        assert url_password not in str(status) and push_secret not in str(status)
    return {
        "sdk_secret": sdk_secret, "webhook_secret": secret, "stream_key": key, "wrong_secret": wrong,
        "wrong_stream_key": bad_key, "rotated_secret": rotated["webhook_secret"],
        "rotated_stream_key": rotated["unkey_key"], "contact_email": contact, "visitor_email": visitor,
        "push_secret": push_secret, "push_url_password": url_password, "push_url_token": url_token,
    }


def cli_rotate(env: dict[str, str], product_id: str) -> tuple[dict[str, Any], str]:
    """``receiver product rotate --stream-key --json``: credentials on stdout (by design), logs on stderr."""
    res = subprocess.run(
        [str(VENV_BIN / "receiver"), "product", "rotate", product_id, "--stream-key", "--json",
         "--grace-seconds", "60"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout), res.stderr


def cli_push(env: dict[str, str], product_id: str) -> tuple[dict[str, Any], str]:
    """``receiver push rotate`` (the new secret on stdout, by design) and ``push status``."""
    res = subprocess.run(
        [str(VENV_BIN / "receiver"), "push", "rotate", product_id, "--json"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert res.returncode == 0, res.stderr
    status = subprocess.run(
        [str(VENV_BIN / "receiver"), "push", "status", product_id],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert status.returncode == 0, status.stderr
    out = json.loads(res.stdout)
    assert out["push_secret"] not in status.stdout  # the status never shows a secret
    return out, res.stderr + status.stderr + status.stdout


@pytest.mark.slow
@pytest.mark.parametrize("log_json", ["false", "true"], ids=["text", "json"])
def test_no_secret_key_or_email_in_logs(
    log_json: str, spawn_receiver: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    rp = spawn_receiver(RECEIVER_LOG_LEVEL="DEBUG", RECEIVER_LOG_JSON=log_json,
                        RECEIVER_PUSH_MAX_ATTEMPTS="2", RECEIVER_PUSH_BACKOFF_BASE_SECONDS="0.05",
                        RECEIVER_PUSH_CLAIM_SECONDS="0.2")
    product_id = new_product_id("logs")
    tag = secrets.token_hex(3)
    contact = f"jane.doe.{tag}@customer-example.org"
    visitor = f"visitor.{tag}@shop-example.net"
    sensitive = asyncio.run(exercise(rp.base_url, product_id, contact, visitor))
    cli_env = {**os.environ, **{k: v for k, v in rp.env.items() if k.startswith("RECEIVER_")}}
    cli_out, cli_log = cli_rotate(cli_env, product_id)
    sensitive["cli_secret"] = cli_out["webhook_secret"]
    sensitive["cli_stream_key"] = cli_out["stream_key"]
    push_out, push_log = cli_push(cli_env, product_id + "-push")
    sensitive["cli_push_secret"] = push_out["push_secret"]
    cli_log += push_log
    rp.terminate()  # flushes and ends the log
    if os.environ.get("SHOW_RECEIVER_LOG"):
        with capsys.disabled():
            print(rp.log())

    log = rp.log()
    lines = log.splitlines()
    assert len(lines) > 10, log  # the receiver did log (DEBUG): the scan is not vacuous
    assert product_id in log
    assert "dead-lettered" in log and "http://***@127.0.0.1" in log  # push logged, redacted
    leaks = {
        name: [ln for ln in (log + "\n" + cli_log).splitlines() if value in ln][:3]
        for name, value in sensitive.items()
        if value in log or value in cli_log
    }
    show(
        capsys, f"security/log-secrecy-{'json' if log_json == 'true' else 'text'}",
        log_lines=len(lines), cli_log_lines=len(cli_log.splitlines()), values_checked=len(sensitive),
        leaked=sorted(leaks), masked_emails=sum(ln.count("***@") for ln in lines),
    )
    assert not leaks, leaks
