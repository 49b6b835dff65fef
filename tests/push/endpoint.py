"""A push destination for tests: a real HTTP server on loopback that records every request
and answers what the test tells it to (svix's ``TestReceiver``, in Python).

    with serve_endpoint() as ep:
        ep.status = 500            # or ep.respond = lambda req: (503, {"retry-after": "1"})
        ...; ep.wait_for(lambda reqs: len(reqs) >= 3)
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    status: int  # what the endpoint answered

    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")

    @property
    def position(self) -> int:
        return int(self.webhook_id.rsplit(":", 1)[1])


@dataclass
class Endpoint:
    base_url: str = ""
    status: int = 200
    respond: Callable[[Received], tuple[int, dict[str, str]]] | None = None
    requests: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return self.base_url + "/hook"

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.requests)

    def delivered(self) -> list[Received]:
        """Requests answered 2xx."""
        return [r for r in self.snapshot() if 200 <= r.status < 300]

    def wait_for(
        self, probe: Callable[[list[Received]], Any], *, timeout: float = 30, what: str = "requests"
    ) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            got = probe(self.snapshot())
            if got:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what}; "
                    f"{len(self.snapshot())} request(s) so far"
                )
            time.sleep(0.02)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        req = Received(scope["method"], scope["path"], headers, body, time.time(), 0)
        # In a thread, so that a slow answer holds back only its own request (the receiver may
        # have several out at once).
        status, extra = (await asyncio.to_thread(self.respond, req) if self.respond
                         else (self.status, {}))
        with self._lock:
            self.requests.append(Received(req.method, req.path, headers, body, req.at, status))
        out = [(b"content-type", b"application/json")]
        out += [(k.encode(), v.encode()) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": out})
        answer = b'{"ok":true}' if status < 300 else b'{"ok":false}'
        await send({"type": "http.response.body", "body": answer})


@contextlib.contextmanager
def serve_endpoint(port: int = 0) -> Iterator[Endpoint]:
    ep = Endpoint()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    ep.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(ep, log_level="warning", lifespan="on", loop="asyncio"))

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.serve(sockets=[sock]))
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="push-endpoint", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test endpoint did not start")
        time.sleep(0.01)
    try:
        yield ep
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
