"""Static server for the demo product (stdlib only).

Serves the pages in ``public/``, posthog-js and rasa-webchat from this folder's ``node_modules``
(installed by ``scripts/browser-deps.sh``; no CDN), the provider snippet from ``posthog/snippet``,
and a generated ``/config.js`` carrying the receiver URL, capture token and optional Rasa URL.

    python posthog/demo/serve.py --api-host http://127.0.0.1:8000 --token <capture_token>

Binds 127.0.0.1. ``--port 0`` picks a free port; the first line printed is
``demo app: http://127.0.0.1:<port>/``. Every option also reads an environment variable
(DEMO_PORT, DEMO_API_HOST, DEMO_CAPTURE_TOKEN, DEMO_PRODUCT_ID, DEMO_RASA_URL,
DEMO_POSTHOG_OPTIONS). Run it by path, not as ``-m posthog...`` (``posthog`` is not a package).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
PUBLIC = HERE / "public"
SNIPPET = HERE.parent / "snippet"
NODE_MODULES = HERE / "node_modules"
POSTHOG_DIST = NODE_MODULES / "posthog-js" / "dist"
RASA_WEBCHAT = NODE_MODULES / "rasa-webchat" / "lib" / "index.js"

PAGES = {
    "/": "index.html",
    "/index.html": "index.html",
    "/projects": "projects.html",
    "/projects.html": "projects.html",
    "/team": "team.html",
    "/team.html": "team.html",
    "/billing": "billing.html",
    "/billing.html": "billing.html",
}
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".map": "application/json",
    ".json": "application/json",
}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class MissingAssets(RuntimeError):
    pass


@dataclass
class DemoConfig:
    api_host: str = ""
    token: str = ""
    product_id: str = ""
    rasa_url: str = ""
    posthog_options: dict[str, Any] = field(default_factory=dict)

    def to_js(self) -> bytes:
        data = {
            "apiHost": self.api_host.rstrip("/"),
            "token": self.token,
            "productId": self.product_id,
            "rasaUrl": self.rasa_url,
            "posthogOptions": self.posthog_options,
        }
        return ("window.DEMO_CONFIG = " + json.dumps(data, sort_keys=True) + ";\n").encode()


def check_assets() -> None:
    missing = [p for p in (POSTHOG_DIST / "array.full.js", RASA_WEBCHAT) if not p.is_file()]
    if missing:
        raise MissingAssets(
            "demo assets missing ("
            + ", ".join(str(p.relative_to(HERE)) for p in missing)
            + "): run scripts/browser-deps.sh"
        )


def _resolve(path: str) -> Path | None:
    if path in PAGES:
        return PUBLIC / PAGES[path]
    head, _, name = path.rpartition("/")
    if not _SAFE_NAME.match(name):
        return None
    if head == "/assets":
        return PUBLIC / name
    if head == "/snippet":
        return SNIPPET / name
    if head == "/vendor/posthog-js":
        return POSTHOG_DIST / name
    if path == "/vendor/rasa-webchat/index.js":
        return RASA_WEBCHAT
    return None


def make_handler(config: DemoConfig, quiet: bool = True) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "demo-app"
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, body: bytes, ctype: str, head_only: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if not head_only:
                self.wfile.write(body)

        def _serve(self, head_only: bool) -> None:
            path = urlsplit(self.path).path
            if path == "/config.js":
                self._send(200, config.to_js(), TYPES[".js"], head_only)
                return
            if path == "/healthz":
                self._send(200, b"ok\n", "text/plain", head_only)
                return
            if path == "/favicon.ico":
                self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon", True)
                return
            target = _resolve(path)
            if target is None or not target.is_file():
                self._send(404, b"not found\n", "text/plain", head_only)
                return
            ctype = TYPES.get(target.suffix, "application/octet-stream")
            self._send(200, target.read_bytes(), ctype, head_only)

        def do_GET(self) -> None:
            self._serve(head_only=False)

        def do_HEAD(self) -> None:
            self._serve(head_only=True)

        def log_message(self, format: str, *args: Any) -> None:
            if not quiet:
                sys.stderr.write("demo %s\n" % (format % args))

    return Handler


class DemoServer:
    """The demo app on 127.0.0.1 in a background thread (for tests): ``with DemoServer(cfg) as s``."""

    def __init__(self, config: DemoConfig, host: str = "127.0.0.1", port: int = 0,
                 quiet: bool = True) -> None:
        check_assets()
        self.httpd = ThreadingHTTPServer((host, port), make_handler(config, quiet))
        self.httpd.daemon_threads = True
        self.config = config
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> DemoServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="demo-app",
                                        daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.httpd.server_close()

    def __enter__(self) -> DemoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description="Serve the demo product app on 127.0.0.1.")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=int(env("DEMO_PORT", "8050")),
                   help="port, 0 = any free one (default 8050, env DEMO_PORT)")
    p.add_argument("--api-host", default=env("DEMO_API_HOST", ""),
                   help="posthog-js api_host: the receiver base URL (env DEMO_API_HOST)")
    p.add_argument("--token", default=env("DEMO_CAPTURE_TOKEN", ""),
                   help="the product's capture token (env DEMO_CAPTURE_TOKEN)")
    p.add_argument("--product-id", default=env("DEMO_PRODUCT_ID", ""),
                   help="product id sent as the person property product_id (env DEMO_PRODUCT_ID)")
    p.add_argument("--rasa-url", default=env("DEMO_RASA_URL", ""),
                   help="Rasa socket URL; the chat widget loads only when set (env DEMO_RASA_URL)")
    p.add_argument("--posthog-options", default=env("DEMO_POSTHOG_OPTIONS", "{}"),
                   help="JSON object merged into posthog.init options (env DEMO_POSTHOG_OPTIONS)")
    p.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        options = json.loads(args.posthog_options)
    except json.JSONDecodeError as exc:
        print(f"--posthog-options is not JSON: {exc}", file=sys.stderr)
        return 2
    if not isinstance(options, dict):
        print("--posthog-options must be a JSON object", file=sys.stderr)
        return 2
    config = DemoConfig(api_host=args.api_host, token=args.token, product_id=args.product_id,
                        rasa_url=args.rasa_url, posthog_options=options)
    try:
        server = DemoServer(config, host=args.host, port=args.port, quiet=not args.verbose)
    except MissingAssets as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(f"demo app: {server.url}/", flush=True)
    if not config.token or not config.api_host:
        print("warning: no --api-host/--token: the app runs with analytics off", file=sys.stderr,
              flush=True)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
