"""Helpers of the push tests: fast retry settings, posting events, the ``receiver`` command,
SSE frames for comparison, and checks on what an endpoint received."""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

import httpx
import orjson
from autoplay_sdk import WebhookReceiver
from standardwebhooks import Webhook

from tests.conftest import ROOT, VENV_BIN, Product, register_product
from tests.faults.kit import hog_event, sql
from tests.push.endpoint import Received

SECRET = "push-secret-for-tests-0123456789"

# Retries in tens of milliseconds instead of seconds, claims and polls in a fraction of a
# second: "down for a minute" is many backoff periods, not a minute (the schedule's shape is
# what is tested; its defaults are in docs/push.md).
FAST: dict[str, Any] = {
    "push_backoff_base_seconds": 0.05,
    "push_backoff_max_seconds": 0.2,
    "push_claim_seconds": 0.2,
    "poll_seconds": 0.5,
}
FAST_ENV = {f"RECEIVER_{k.upper()}": str(v) for k, v in FAST.items()}


def push_product(base_url: str, url: str, product_id: str, *, secret: str | None = SECRET,
                 force: bool = False, **config: Any) -> Product:
    """Register (``force``: again) in push mode; ``config`` goes into integration_config."""
    integration = {"mode": "push", "url": url, **config}
    if secret is not None:
        integration["secret"] = secret
    return register_product(base_url, product_id, integration_config=integration,
                            force_reregister=force)


def post_events(product: Product, run: str, indexes: range, **extra: Any) -> list[int]:
    """POST Hog events to the product's webhook; their positions, in order."""
    positions = []
    with httpx.Client(timeout=10) as client:
        for i in indexes:
            r = client.post(product.webhook_url, json=hog_event(run, i, **extra),
                            headers={"x-posthog-secret": product.webhook_secret})
            assert r.status_code == 200, r.text
            positions.append(r.json()["position"])
    return positions


def receiver_cli(database_url: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The real ``receiver`` command against the test database."""
    env = {**os.environ, "RECEIVER_DATABASE_URL": database_url, "RECEIVER_LOG_LEVEL": "WARNING"}
    proc = subprocess.run([str(VENV_BIN / "receiver"), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def cli_json(database_url: str, *args: str) -> Any:
    return orjson.loads(receiver_cli(database_url, *args, "--json").stdout)


def stream_bodies(product: Product, since: int, n: int, timeout: float = 20) -> dict[int, bytes]:
    """The data of ``n`` stream frames after ``since``, by position (exact bytes)."""
    out: dict[int, bytes] = {}
    deadline = time.monotonic() + timeout
    with httpx.stream("GET", f"{product.stream_url}?since={since}", timeout=timeout,
                      headers={"Authorization": f"Bearer {product.stream_key}"}) as resp:
        assert resp.status_code == 200
        position = None
        for line in resp.iter_lines():
            if line.startswith("id: "):
                position = int(line[4:])
            elif line.startswith("data: ") and line != "data: " and position is not None:
                out[position] = line[6:].encode()
                if len(out) >= n:
                    return out
            if time.monotonic() > deadline:
                break
    raise AssertionError(f"only {len(out)} of {n} frames on the stream")


def assert_signed(requests: list[Received], secret: str = SECRET) -> None:
    """Every request verifies with the stock WebhookReceiver and a Standard Webhooks verifier."""
    sdk = WebhookReceiver(secret=secret)
    std = Webhook(secret if secret.startswith("whsec_") else secret.encode())
    for r in requests:
        assert sdk.verify(r.body, r.headers["x-connector-signature"]), r.webhook_id
        std.verify(r.body, r.headers)


def endpoint_row(database_url: str, product_id: str) -> dict[str, Any]:
    rows = sql(database_url, "SELECT * FROM push_endpoints WHERE product_id = $1", product_id)
    assert rows, f"no push endpoint for {product_id}"
    return dict(rows[0])


def dead_positions(database_url: str, product_id: str) -> list[int]:
    rows = sql(
        database_url,
        "SELECT d.position FROM push_dead_letters d JOIN push_endpoints e ON e.id = d.endpoint_id "
        "WHERE e.product_id = $1 ORDER BY 1",
        product_id,
    )
    return [r[0] for r in rows]


def positions_of(requests: list[Received]) -> list[int]:
    return [r.position for r in requests]
