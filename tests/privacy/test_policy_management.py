"""Setting policies (CLI, POST /products), applying changes live, refusing to start without a key."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.privacy.helpers import fetch

RECEIVER = str(Path(sys.executable).parent / "receiver")
KEY = "k" * 32


def cli(database_url: str, *args: str, key: str | None = KEY) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RECEIVER_DATABASE_URL": database_url}
    env.pop("RECEIVER_PII_HASH_KEY", None)
    if key:
        env["RECEIVER_PII_HASH_KEY"] = key
    return subprocess.run(
        [RECEIVER, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def click(email: str = "amy@example.com") -> dict[str, Any]:
    return {
        "event": "$autocapture", "event_type": "click", "uuid": str(uuid.uuid4()),
        "distinct_id": "u-1", "email": email, "session_id": "s",
        "current_url": "https://app.example.com/a?x=1", "elements_chain": 'button:text="Go"',
    }


def test_cli_policy_show_set_and_refuse_hash_without_key(database_url: str) -> None:
    r = cli(database_url, "product", "create", "cli-p", "--contact-email", "ops@example.com", "--json")
    assert r.returncode == 0, r.stderr

    r = cli(database_url, "product", "policy", "cli-p", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {
        "product_id": "cli-p", "email": "keep", "query": "keep",
        "builtin_redactions": ["card_number", "email"], "redact": [],
    }

    r = cli(database_url, "product", "policy", "cli-p", "--email", "hash", "--query", "strip",
            "--redact", r"ACME-\d{6}", "--redact", "secret-[a-z]+", "--json")
    assert r.returncode == 0, r.stderr
    policy = json.loads(r.stdout)
    assert policy["email"] == "hash" and policy["query"] == "strip"
    assert policy["redact"] == [r"ACME-\d{6}", "secret-[a-z]+"]

    # Options change only what they name.
    r = cli(database_url, "product", "policy", "cli-p", "--builtin-redactions", "card_number", "--json")
    policy = json.loads(r.stdout)
    assert policy["email"] == "hash" and policy["builtin_redactions"] == ["card_number"]
    assert len(policy["redact"]) == 2

    r = cli(database_url, "product", "show", "cli-p", "--json")
    assert json.loads(r.stdout)["privacy_policy"]["email"] == "hash"

    # Hashing needs the installation key here too, and bad patterns are refused.
    r = cli(database_url, "product", "policy", "cli-p", "--reset", "--email", "hash", key=None)
    assert r.returncode == 1 and "RECEIVER_PII_HASH_KEY" in r.stderr
    r = cli(database_url, "product", "policy", "cli-p", "--redact", "(unclosed")
    assert r.returncode == 1 and "invalid redaction pattern" in r.stderr
    r = cli(database_url, "product", "policy", "nope", "--email", "drop")
    assert r.returncode == 1 and "unknown product" in r.stderr

    r = cli(database_url, "product", "policy", "cli-p", "--reset", "--json")
    assert json.loads(r.stdout)["email"] == "keep"


@pytest.mark.slow
def test_receiver_refuses_to_start_without_key_when_a_product_hashes(
    spawn_receiver: Callable[..., Any], database_url: str
) -> None:
    assert cli(database_url, "product", "create", "h", "--contact-email", "o@example.com").returncode == 0
    assert cli(database_url, "product", "policy", "h", "--email", "hash").returncode == 0
    with pytest.raises(RuntimeError) as info:
        spawn_receiver(RECEIVER_PII_HASH_KEY="")
    assert "RECEIVER_PII_HASH_KEY is not set but these products hash emails: h" in str(info.value)
    proc = spawn_receiver(RECEIVER_PII_HASH_KEY=KEY)
    assert httpx.get(f"{proc.base_url}/readyz").status_code == 200


def test_post_products_privacy_policy(receiver_factory: Callable[..., Any], database_url: str) -> None:
    live = receiver_factory()  # no hash key
    base = live.base_url
    body = {"product_id": "api-p", "contact_email": "ops@example.com"}

    r = httpx.post(f"{base}/products", json={**body, "privacy_policy": {"email": "hash"}})
    assert r.status_code == 400 and "RECEIVER_PII_HASH_KEY" in r.json()["detail"]
    r = httpx.post(f"{base}/products", json={**body, "privacy_policy": {"email": "scramble"}})
    assert r.status_code == 400 and "privacy_policy.email" in r.json()["detail"]

    r = httpx.post(f"{base}/products", json={**body, "privacy_policy": {"email": "drop", "query": "strip"}})
    assert r.status_code == 201, r.text
    assert r.json()["privacy_policy"]["email"] == "drop"
    # The SDK's onboard_product re-registers without a policy: the policy stays as it was.
    r = httpx.post(f"{base}/products", json={**body, "force_reregister": True})
    assert r.status_code == 201, r.text
    secret = r.json()["webhook_secret"]
    r = httpx.post(f"{base}/webhook/api-p", json=click(), headers={"x-posthog-secret": secret})
    assert r.status_code == 200, r.text
    [row] = asyncio.run(fetch(database_url, "SELECT email, current_url FROM events"))
    assert row["email"] is None and row["current_url"] == "https://app.example.com/a"


def test_policy_change_applies_to_a_running_receiver(
    receiver_factory: Callable[..., Any], database_url: str
) -> None:
    live = receiver_factory(pii_hash_key=KEY)
    r = httpx.post(
        f"{live.base_url}/products", json={"product_id": "live-p", "contact_email": "o@example.com"}
    )
    secret = {"x-posthog-secret": r.json()["webhook_secret"]}
    url = f"{live.base_url}/webhook/live-p"
    assert httpx.post(url, json=click(), headers=secret).status_code == 200

    assert cli(database_url, "product", "policy", "live-p", "--email", "hash").returncode == 0
    deadline = time.monotonic() + 15
    while True:
        assert httpx.post(url, json=click(), headers=secret).status_code == 200
        rows = asyncio.run(fetch(database_url, "SELECT email FROM events ORDER BY position"))
        if rows[-1]["email"].startswith("h:"):
            break
        assert time.monotonic() < deadline, "policy change not applied"
        time.sleep(0.2)
    assert rows[0]["email"] == "amy@example.com"  # stored before the change: not rewritten


def test_hash_policy_on_a_receiver_without_key_fails_closed(
    receiver_factory: Callable[..., Any], database_url: str
) -> None:
    """Set from elsewhere (a CLI with the key) while this receiver runs without it: 503, no row."""
    live = receiver_factory()  # no RECEIVER_PII_HASH_KEY
    r = httpx.post(f"{live.base_url}/products", json={"product_id": "fc", "contact_email": "o@example.com"})
    secret = {"x-posthog-secret": r.json()["webhook_secret"]}
    assert cli(database_url, "product", "policy", "fc", "--email", "hash").returncode == 0
    deadline = time.monotonic() + 15
    while True:
        r = httpx.post(f"{live.base_url}/webhook/fc", json=click(), headers=secret)
        if r.status_code == 503:
            break
        assert r.status_code == 200 and time.monotonic() < deadline, r.text
        time.sleep(0.2)
    assert "RECEIVER_PII_HASH_KEY" in r.json()["detail"] and "Retry-After" in r.headers
    rows = asyncio.run(fetch(database_url, "SELECT email FROM events"))
    assert all(row["email"] == "amy@example.com" for row in rows)  # only rows from before
