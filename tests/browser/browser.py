"""Browser test infrastructure: Debian chromium driven by Playwright, the demo app, and a fake
capture host that records what posthog-js sends.

Playwright's own browser download does not work here; we launch the Debian ``chromium`` binary
through ``executable_path``. ``scripts/browser-deps.sh`` installs it (and the demo's npm assets);
``make test`` runs that script. Without chromium or the npm assets the browser tests skip with the
reason.

Fixtures (async, function scoped; pytest-asyncio ``asyncio_mode=auto``):

- ``chromium``: a launched headless Browser; closed at teardown.
- ``demo_app_factory``: ``start(api_host=..., token=..., ...) -> DemoServer``; every server it
  started is stopped at teardown.
- ``fake_capture``: a ``FakeCaptureHost`` (an unused loopback URL, never listened on) that tests
  attach to a browser context with ``await fake_capture.attach(context)``; it answers the routes
  posthog-js calls the way the receiver does and records every request.

Helpers: ``decode_capture_body`` (every body form posthog-js uses), ``wait_until`` (poll a
condition with a deadline, no bare sleeps), ``chain_text`` (the ``text="..."`` of element 0).
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import importlib.util
import json
import re
import shutil
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote_to_bytes, urlencode, urlsplit

import pytest
import pytest_asyncio

from receiver.ingest import capture as receiver_capture
from tests.unavailable import unavailable

REPO = Path(__file__).resolve().parents[2]
DEMO_DIR = REPO / "posthog" / "demo"
SERVE_PY = DEMO_DIR / "serve.py"
# Screenshots for the documentation site (docs/*.md show them); git-ignored, never a tracked file.
SCREENSHOTS = REPO / "build" / "screenshots"

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# posthog-js drops every event when the browser looks automated (navigator.webdriver, which
# Playwright sets, or a HeadlessChrome user agent); PostHog's advice for end-to-end tests is this
# option. The demo app itself (make demo, real people) keeps the bot filter on.
TEST_POSTHOG_OPTIONS: dict[str, Any] = {"opt_out_useragent_filter": True}
TEST_TOKEN = "phc_demo_test_token"
# Deadlines, not sleeps: generous because CI shares 2 cores with the rest of the suite; a passing
# run never waits for them.
EVENT_TIMEOUT = 20.0
UI_TIMEOUT_MS = 20_000
CAPTURE_PATHS = ("/e", "/i/v0/e", "/batch", "/capture", "/track", "/engage")


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def load_serve_module() -> Any:
    """Import ``posthog/demo/serve.py`` by path (``posthog`` is a folder, not a package)."""
    name = "autoplay_demo_serve"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SERVE_PY)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    """Poll ``predicate`` (sync or async) until it returns a truthy value; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        await asyncio.sleep(interval)


# ---------------------------------------------------------------- decoding what posthog-js sends


def _b64(data: bytes) -> bytes:
    data = data.strip().replace(b" ", b"+")
    return base64.b64decode(data + b"=" * (-len(data) % 4))


def unwrap_capture_body(body: bytes, content_type: str = "", query: str = "") -> Any:
    """The JSON document inside one capture request, transport encodings undone.

    gzip (magic bytes; posthog-js sends ``text/plain`` and no ``compression`` parameter), plain
    JSON, base64 (``compression=base64``), form-urlencoded ``data=<base64>`` (sendBeacon).
    """
    params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    compression = params.get("compression", "")
    data = body
    if "x-www-form-urlencoded" in content_type.lower():
        form = {}
        for part in body.split(b"&"):
            key, _, value = part.partition(b"=")
            form[unquote_to_bytes(key.replace(b"+", b" ")).decode()] = unquote_to_bytes(value)
        data = form.get("data", b"")
        compression = form.get("compression", b"").decode() or compression
    if compression == "base64":
        data = _b64(data)
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return json.loads(data)


def decode_capture_body(body: bytes, content_type: str = "", query: str = "") -> list[dict]:
    """Events from one capture request: body an array, a single event, or
    ``{api_key|token, batch, sent_at}``, in any encoding ``unwrap_capture_body`` undoes."""
    payload = unwrap_capture_body(body, content_type, query)
    if isinstance(payload, list):
        return payload
    if isinstance(payload, dict) and isinstance(payload.get("batch"), list):
        return payload["batch"]
    if isinstance(payload, dict) and "event" in payload:
        return [payload]
    raise ValueError(f"unrecognised capture payload: {str(payload)[:200]}")


_TEXT = re.compile(r'(?:^|[:;"])text="((?:[^"\\]|\\.)*)"')


def first_element(elements_chain: str) -> str:
    """Element 0 of an ``elements_chain`` (elements are joined by ``;`` outside quotes)."""
    in_quotes = escaped = False
    for i, ch in enumerate(elements_chain):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            in_quotes = not in_quotes
        elif ch == ";" and not in_quotes:
            return elements_chain[:i]
    return elements_chain


def chain_text(elements_chain: str) -> str | None:
    """``text`` of element 0 of an ``elements_chain``."""
    m = _TEXT.search(first_element(elements_chain))
    return m.group(1).replace('\\"', '"') if m else None


# ---------------------------------------------------------------- a fake capture host


def remote_config(token: str) -> dict[str, Any]:
    """Exactly what the receiver answers on ``/array/<token>/config``, for the fake host."""
    return {**receiver_capture.remote_config(token), "siteApps": []}


def flags_response() -> dict[str, Any]:
    return dict(receiver_capture.FLAGS_RESPONSE)


@dataclass
class RecordedRequest:
    method: str
    url: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes | None
    resource_type: str
    events: list[dict] = field(default_factory=list)

    @property
    def is_capture(self) -> bool:
        return self.method == "POST" and self.path.rstrip("/") in CAPTURE_PATHS


class FakeCaptureHost:
    """Stands in for the receiver at ``api_host`` through Playwright routing (no socket opened)."""

    def __init__(self, api_host: str | None = None, token: str | None = None) -> None:
        self.api_host = (api_host or f"http://127.0.0.1:{free_port()}").rstrip("/")
        self.token = token or TEST_TOKEN
        self.requests: list[RecordedRequest] = []
        self.errors: list[str] = []

    async def attach(self, context: Any) -> None:
        await context.route(self.api_host + "/**", self._handle)

    @property
    def events(self) -> list[dict]:
        return [e for r in self.requests if r.is_capture for e in r.events]

    def find(self, event: str | None = None, **props: Any) -> list[dict]:
        out = []
        for e in self.events:
            if event is not None and e.get("event") != event:
                continue
            p = e.get("properties") or {}
            if all(p.get(k) == v for k, v in props.items()):
                out.append(e)
        return out

    async def wait_for_event(self, check: Callable[[dict], bool], timeout: float = EVENT_TIMEOUT,
                             what: str = "event") -> dict:
        def found() -> dict | None:
            return next((e for e in self.events if check(e)), None)

        return await wait_until(found, timeout=timeout, what=what)

    async def _handle(self, route: Any) -> None:
        req = route.request
        parts = urlsplit(req.url)
        headers = await req.all_headers()
        rec = RecordedRequest(
            method=req.method,
            url=req.url,
            path=parts.path,
            query=parts.query,
            headers=headers,
            body=req.post_data_buffer,
            resource_type=req.resource_type,
        )
        if rec.is_capture and rec.body is not None:
            try:
                rec.events = decode_capture_body(rec.body, headers.get("content-type", ""),
                                                 rec.query)
            except (ValueError, OSError, EOFError) as exc:  # keep serving; tests assert on errors
                self.errors.append(f"{rec.url}: {exc!r}")
        self.requests.append(rec)

        origin = headers.get("origin") or "*"
        cors = {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
            "Access-Control-Allow-Headers": "Content-Type",
            "Vary": "Origin",
        }
        path = parts.path.rstrip("/")
        if req.method == "OPTIONS":
            await route.fulfill(status=204, headers=cors)
        elif rec.is_capture:
            await route.fulfill(status=200, headers=cors, content_type="application/json",
                                body='{"status": 1}')
        elif path in ("/flags", "/decide"):
            await route.fulfill(status=200, headers=cors, content_type="application/json",
                                body=json.dumps(flags_response()))
        elif re.fullmatch(r"/array/[^/]+/config", path):
            await route.fulfill(status=200, headers=cors, content_type="application/json",
                                body=json.dumps(remote_config(self.token)))
        else:
            await route.fulfill(status=404, headers=cors, content_type="text/plain",
                                body="not found")


# ---------------------------------------------------------------- fixtures


def _require_assets() -> Any:
    serve = load_serve_module()
    try:
        serve.check_assets()
    except serve.MissingAssets as exc:
        unavailable(str(exc))
    return serve


@pytest_asyncio.fixture
async def chromium() -> AsyncIterator[Any]:
    exe = chromium_path()
    if exe is None:
        unavailable("Debian chromium is not installed: run scripts/browser-deps.sh (as root)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
def demo_app_factory() -> Any:
    serve = _require_assets()
    servers: list[Any] = []

    def start(api_host: str = "", token: str = "", product_id: str = "", rasa_url: str = "",
              posthog_options: dict[str, Any] | None = None) -> Any:
        options = dict(TEST_POSTHOG_OPTIONS)
        options.update(posthog_options or {})
        cfg = serve.DemoConfig(api_host=api_host, token=token, product_id=product_id,
                               rasa_url=rasa_url, posthog_options=options)
        server = serve.DemoServer(cfg).start()
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.close()


@pytest.fixture
def fake_capture() -> FakeCaptureHost:
    return FakeCaptureHost()


async def new_context(browser: Any, **kwargs: Any) -> Any:
    return await browser.new_context(**kwargs)


async def open_demo(browser: Any, base_url: str, user: str, email: str,
                    fake: FakeCaptureHost | None = None, query: str = "",
                    setup: Callable[[Any], Any] | None = None) -> tuple[Any, Any]:
    """A new context + page on the demo as ``user``; waits until posthog-js has loaded.

    ``fake`` routes posthog-js's host to a ``FakeCaptureHost``; ``setup(context)`` runs before
    the first navigation (e.g. to attach listeners that must see the first requests).
    """
    context = await new_context(browser)
    if fake is not None:
        await fake.attach(context)
    if setup is not None:
        result = setup(context)
        if isinstance(result, Awaitable):
            await result
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = await context.new_page()
    q = urlencode({"user": user, "email": email}) + (f"&{query}" if query else "")
    await page.goto(f"{base_url}/?{q}")
    await page.wait_for_function("window.demo && window.demo.posthog === true",
                                 timeout=UI_TIMEOUT_MS)
    return context, page
