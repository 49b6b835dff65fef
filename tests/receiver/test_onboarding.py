"""POST /products through the stock autoplay_sdk.admin.onboard_product (0.7.2), unmodified."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
import pytest
from autoplay_sdk import AsyncConnectorClient
from autoplay_sdk.admin import onboard_product

from tests.payloads import unique


async def test_onboard_product_works_unmodified(receiver) -> None:  # type: ignore[no-untyped-def]
    result = await onboard_product(
        "tutorial-product", contact_email="you@yourcompany.com", connector_url=receiver.base_url
    )
    assert result.webhook_url == f"{receiver.base_url}/webhook/tutorial-product"
    assert result.stream_url == f"{receiver.base_url}/stream/tutorial-product"
    assert result.unkey_key and result.unkey_key_id and result.webhook_secret
    assert result.connector_response["capture_token"].startswith("phc_")

    # The four values work as the tutorial uses them.
    got: asyncio.Future = asyncio.get_running_loop().create_future()
    connected = asyncio.Event()
    client = AsyncConnectorClient(url=result.stream_url, token=result.unkey_key, on_connect=connected.set)
    client.on_actions(lambda p: got.done() or got.set_result(p))
    task = client.run_in_background()
    try:
        await asyncio.wait_for(connected.wait(), 10)
        async with httpx.AsyncClient() as http:
            r = await http.post(
                result.webhook_url, json=unique(), headers={"x-posthog-secret": result.webhook_secret}
            )
        assert r.status_code == 200
        payload = await asyncio.wait_for(got, 10)
    finally:
        client.stop()
        task.cancel()
    assert payload.product_id == "tutorial-product"


async def test_duplicate_is_409_unless_force_reregister_which_rotates(receiver) -> None:  # type: ignore[no-untyped-def]
    first = await onboard_product("dup", contact_email="a@example.com", connector_url=receiver.base_url)
    with pytest.raises(Exception) as info:
        await onboard_product("dup", contact_email="a@example.com", connector_url=receiver.base_url)
    assert getattr(info.value, "status_code", None) == 409

    second = await onboard_product(
        "dup", contact_email="a@example.com", connector_url=receiver.base_url, force_reregister=True
    )
    assert second.unkey_key != first.unkey_key
    assert second.webhook_secret != first.webhook_secret
    async with httpx.AsyncClient() as http:
        r = await http.post(
            second.webhook_url, json=unique(), headers={"x-posthog-secret": second.webhook_secret}
        )
        assert r.status_code == 200
        # Rotation keeps the old secret working for the grace period (24 h by default).
        r = await http.post(
            first.webhook_url, json=unique(), headers={"x-posthog-secret": first.webhook_secret}
        )
        assert r.status_code == 200


def test_exactly_201_and_required_fields(receiver) -> None:  # type: ignore[no-untyped-def]
    r = httpx.post(
        f"{receiver.base_url}/products",
        json={"product_id": "raw", "contact_email": "x@example.com", "webhook_secret": "s" * 43},
    )
    assert r.status_code == 201
    body = r.json()
    assert body["webhook_secret"] == "s" * 43  # the SDK-generated secret is honoured
    for key in ("unkey_key", "unkey_key_id", "capture_token", "webhook_url", "stream_url"):
        assert body[key]
    for bad in (
        {"product_id": "raw2"},
        {"product_id": "bad id", "contact_email": "x@example.com"},
        {"product_id": "raw3", "contact_email": "not-an-email"},
    ):
        r = httpx.post(f"{receiver.base_url}/products", json=bad)
        assert r.status_code == 400, bad
        assert r.json()["detail"]


def test_closed_to_non_loopback_without_admin_token(receiver_factory) -> None:  # type: ignore[no-untyped-def]
    live = receiver_factory(admin_token="admin-secret-token-0123456789")
    body = {"product_id": "p1", "contact_email": "x@example.com"}
    # A proxy in front means the real caller is not on loopback.
    r = httpx.post(f"{live.base_url}/products", json=body, headers={"X-Forwarded-For": "203.0.113.9"})
    assert r.status_code == 403
    assert "RECEIVER_ADMIN_TOKEN" in r.json()["detail"]
    r = httpx.post(
        f"{live.base_url}/products",
        json=body,
        headers={"X-Forwarded-For": "203.0.113.9", "Authorization": "Bearer admin-secret-token-0123456789"},
    )
    assert r.status_code == 201
    closed = receiver_factory(admin_allow_loopback=False)
    r = httpx.post(f"{closed.base_url}/products", json={"product_id": "p2", "contact_email": "x@example.com"})
    assert r.status_code == 403


def test_cli_product_lifecycle(receiver, database_url) -> None:  # type: ignore[no-untyped-def]
    env = {"RECEIVER_DATABASE_URL": database_url, "RECEIVER_PUBLIC_URL": receiver.base_url, "PATH": ""}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "receiver", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    created = cli("product", "create", "cli-prod", "--contact-email", "ops@example.com", "--json")
    assert created.returncode == 0, created.stderr
    creds = json.loads(created.stdout)
    assert creds["webhook_url"] == f"{receiver.base_url}/webhook/cli-prod"
    assert creds["stream_url"] == f"{receiver.base_url}/stream/cli-prod"
    assert creds["webhook_secret"] and creds["stream_key"] and creds["capture_token"]

    r = httpx.post(creds["webhook_url"], json=unique(), headers={"x-posthog-secret": creds["webhook_secret"]})
    assert r.status_code == 200

    shown = cli("product", "show", "cli-prod", "--json")
    info = json.loads(shown.stdout)
    assert info["capture_token"] == creds["capture_token"]
    assert info["last_position"] == 1
    assert creds["webhook_secret"] not in shown.stdout and creds["stream_key"] not in shown.stdout

    assert "cli-prod" in cli("product", "list").stdout

    rotated = json.loads(cli("product", "rotate", "cli-prod", "--json").stdout)
    assert rotated["webhook_secret"] != creds["webhook_secret"]
    for secret in (rotated["webhook_secret"], creds["webhook_secret"]):  # both inside the grace period
        r = httpx.post(creds["webhook_url"], json=unique(), headers={"x-posthog-secret": secret})
        assert r.status_code == 200

    assert cli("product", "delete", "cli-prod").returncode == 2  # needs --yes
    deleted = json.loads(cli("product", "delete", "cli-prod", "--yes", "--json").stdout)
    assert deleted == {"deleted": "cli-prod", "events_removed": 3}
    assert cli("product", "show", "cli-prod").returncode == 1
