"""``POST /products`` is closed to non-loopback callers without the admin token, and CORS is
offered on the browser-facing capture endpoints only (never on webhook, stream or products).

Non-loopback callers are simulated with forwarding headers: the receiver treats a request that
came through a proxy as coming from elsewhere, whatever the socket's peer address is.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.faults.kit import new_product_id, nodelay, show

ADMIN_TOKEN = "adm_" + secrets.token_urlsafe(24)
PROXY_HEADERS = [
    {"X-Forwarded-For": "203.0.113.7"},
    {"X-Forwarded-For": "127.0.0.1"},  # a spoofed "I am local" is still a proxied request
    {"Forwarded": "for=198.51.100.2;proto=https"},
    {"X-Real-IP": "198.51.100.3"},
]


def register(base_url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"product_id": new_product_id("adm"), "contact_email": "ops@example.com"}
    return httpx.post(f"{base_url}/products", json=body, headers=headers or {}, timeout=10)


def assert_forbidden(r: httpx.Response) -> None:
    assert r.status_code == 403, (r.status_code, r.text)
    assert r.json()["detail"]
    assert "webhook_secret" not in r.text and "unkey_key" not in r.text


def test_products_closed_to_proxied_callers_by_default(
    receiver: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    nodelay(receiver)
    assert register(receiver.base_url).status_code == 201  # loopback, no proxy: open (the SDK path)
    for headers in PROXY_HEADERS:
        assert_forbidden(register(receiver.base_url, headers))
    # No admin token configured: a Bearer does not open anything.
    assert_forbidden(register(receiver.base_url, {**PROXY_HEADERS[0], "Authorization": "Bearer x"}))
    show(capsys, "security/products-default", proxied_attempts=len(PROXY_HEADERS) + 1, status=403)


def test_products_with_admin_token(
    receiver_factory: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    live = nodelay(receiver_factory(admin_token=ADMIN_TOKEN))
    good = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for headers in PROXY_HEADERS:
        assert_forbidden(register(live.base_url, headers))
        assert_forbidden(register(live.base_url, {**headers, "Authorization": f"Bearer {ADMIN_TOKEN}x"}))
        assert_forbidden(register(live.base_url, {**headers, "Authorization": ADMIN_TOKEN}))  # no scheme
        assert register(live.base_url, {**headers, **good}).status_code == 201
    show(capsys, "security/products-token", proxied_without_token=403, proxied_with_token=201)


def test_products_closed_to_loopback_when_disabled(
    receiver_factory: Callable[..., Any], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Through the environment variable, as an operator would set it.
    monkeypatch.setenv("RECEIVER_ADMIN_ALLOW_LOOPBACK", "false")
    monkeypatch.setenv("RECEIVER_ADMIN_TOKEN", ADMIN_TOKEN)
    live = nodelay(receiver_factory())
    assert live.settings.admin_allow_loopback is False
    assert_forbidden(register(live.base_url))
    assert_forbidden(register(live.base_url, {"Authorization": "Bearer wrong"}))
    assert register(live.base_url, {"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 201
    # Loopback disabled and no token configured at all: closed to everyone.
    monkeypatch.delenv("RECEIVER_ADMIN_TOKEN")
    closed = nodelay(receiver_factory())
    assert_forbidden(register(closed.base_url))
    assert_forbidden(register(closed.base_url, {"Authorization": f"Bearer {ADMIN_TOKEN}"}))
    show(capsys, "security/products-no-loopback", loopback=403, token=201, no_token_configured=403)


# --------------------------------------------------------------------------- CORS

ORIGIN = "https://evil.example"
PREFLIGHT = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "content-type, x-posthog-secret"}


def cors_headers(r: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in r.headers.items() if k.lower().startswith("access-control-")}


def test_no_cors_on_webhook_stream_and_products(
    receiver: Any, make_product: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    nodelay(receiver)
    p = make_product()
    base = receiver.base_url
    seen: dict[str, int] = {}
    with httpx.Client(timeout=10) as c:
        checks = [
            ("OPTIONS /webhook", c.options(p.webhook_url, headers=PREFLIGHT)),
            ("POST /webhook", c.post(p.webhook_url, json={"event": "x"},
                                     headers={"Origin": ORIGIN, "x-posthog-secret": p.webhook_secret})),
            ("POST /webhook 401", c.post(p.webhook_url, json={"event": "x"}, headers={"Origin": ORIGIN})),
            ("OPTIONS /stream", c.options(p.stream_url, headers={**PREFLIGHT, "Access-Control-Request-Method": "GET"})),  # noqa: E501
            ("GET /stream 401", c.get(p.stream_url, headers={"Origin": ORIGIN})),
            ("OPTIONS /products", c.options(f"{base}/products", headers=PREFLIGHT)),
            ("POST /products", c.post(f"{base}/products", headers={"Origin": ORIGIN},
                                      json={"product_id": new_product_id(), "contact_email": "a@b.example"})),
            ("GET /healthz", c.get(f"{base}/healthz", headers={"Origin": ORIGIN})),
        ]
        with c.stream("GET", p.stream_url, headers={"Origin": ORIGIN,
                                                    "Authorization": f"Bearer {p.stream_key}"}) as r:
            checks.append(("GET /stream 200", r))
        for name, r in checks:
            seen[name] = r.status_code
            assert not cors_headers(r), (name, cors_headers(r))
            if name.startswith("OPTIONS"):
                assert r.status_code >= 400, (name, r.status_code)  # no preflight success
    assert seen["POST /webhook"] == 200 and seen["GET /stream 200"] == 200
    # A foreign Origin is a web page, not the machine's owner: not trusted as loopback.
    assert seen["POST /products"] == 403
    show(capsys, "security/cors-closed", checked=len(checks), statuses=seen, cors_headers_seen=0)


def test_cors_on_capture_endpoints(
    receiver: Any, make_product: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    nodelay(receiver)
    p = make_product()
    base = receiver.base_url
    body = {"api_key": p.capture_token, "event": "$pageview", "distinct_id": "u1",
            "properties": {"$current_url": "https://app.example.com/"}}
    seen: dict[str, int] = {}
    with httpx.Client(timeout=10) as c:
        for path in ("/e/", "/batch/", "/i/v0/e/", "/flags/"):
            pre = c.options(base + path, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                                                  "Access-Control-Request-Headers": "content-type"})
            assert pre.status_code in (200, 204), (path, pre.status_code)
            assert pre.headers.get("access-control-allow-origin") == ORIGIN, (path, pre.headers)
            seen[f"OPTIONS {path}"] = pre.status_code
        r = c.post(base + "/e/", json=body, headers={"Origin": ORIGIN})
        assert r.headers.get("access-control-allow-origin") == ORIGIN, r.headers
        assert "access-control-allow-credentials" not in r.headers
        seen["POST /e/"] = r.status_code
    show(capsys, "security/cors-capture", statuses=seen)
