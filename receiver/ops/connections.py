"""Connection hygiene for ``receiver serve``: header timeout, header size cap, a bounded number of
open connections, and a concurrency limit with a clear 503.

uvicorn's httptools protocol has none of the first three: a connection that never finishes its
headers is kept forever, and an unterminated header is buffered whole. 20,000 such connections
exhausted the file descriptors (``/healthz`` stopped answering) and one 256 MiB header grew the
process to 427 MiB. :class:`GuardedHttpToolsProtocol` adds them to the very same protocol:

* headers must be complete ``RECEIVER_HEADER_TIMEOUT_SECONDS`` after a request's first byte (or
  after the connection opened); otherwise the connection is closed;
* request line plus headers may not exceed ``RECEIVER_MAX_HEADER_BYTES``: 431 and close, having
  buffered at most that plus one read;
* at most ``RECEIVER_MAX_CONNECTIONS`` connections per process, lowered to fit the process's
  open-file limit (raised to its hard limit at start). When a new connection would exceed it,
  the longest-idle connection with no request in progress (still sending headers, or idle
  between keep-alive requests) is closed to make room, so a flood of idle sockets can never lock
  out a real request; only when every connection is busy is the new one refused with a 503.

:class:`ConcurrencyLimit` (ASGI) answers 503 with Retry-After past ``RECEIVER_MAX_CONCURRENT_REQUESTS``
requests in progress, streams and health checks excepted (streams are bounded by the connection
limit; health must always answer).

Behind a proxy (TLS termination, say) the proxy's own limits apply to the outside; these still
protect the receiver from the proxy's connections.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import OrderedDict
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from receiver.settings import Settings

log = logging.getLogger("receiver.connections")

# Descriptors kept for everything but client sockets: the listening socket, database pool and
# LISTEN connections, log and metrics files, the offload thread's needs.
RESERVED_FDS = 64

def _raw_response(status: bytes, body: bytes, *extra: bytes) -> bytes:
    head = [b"HTTP/1.1 " + status, b"content-type: application/json", *extra,
            b"connection: close", b"content-length: " + str(len(body)).encode()]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


_REFUSED = _raw_response(
    b"503 Service Unavailable",
    b'{"detail":"too many open connections; retry shortly","code":"unavailable"}',
    b"retry-after: 1",
)
_TOO_LARGE = _raw_response(
    b"431 Request Header Fields Too Large",
    b'{"detail":"request line and headers too large (RECEIVER_MAX_HEADER_BYTES)",'
    b'"code":"request_header_too_large"}',
)


def raise_fd_limit() -> int:
    """Raise the soft open-file limit to the hard one (inherited by worker processes)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


class ConnectionGuard:
    """The state every connection of one process shares."""

    def __init__(self, *, header_timeout: float, max_header_bytes: int, max_connections: int,
                 reserved_fds: int = RESERVED_FDS) -> None:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        fit = max(16, soft - reserved_fds) if soft != resource.RLIM_INFINITY else max_connections
        self.header_timeout = header_timeout
        self.max_header_bytes = max_header_bytes
        self.max_connections = min(max_connections, fit)
        self.open = 0
        # Connections with no request in progress, oldest first: the ones that may be closed.
        self.idle: OrderedDict[GuardedHttpToolsProtocol, None] = OrderedDict()
        self.evicted = 0
        self.refused = 0
        self.timed_out = 0
        self.too_large = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionGuard:
        return cls(
            header_timeout=settings.header_timeout_seconds,
            max_header_bytes=settings.max_header_bytes,
            max_connections=settings.max_connections,
            reserved_fds=RESERVED_FDS + settings.db_pool_size,
        )

    def admit(self, conn: GuardedHttpToolsProtocol) -> bool:
        while self.open >= self.max_connections and self.idle:
            oldest, _ = self.idle.popitem(last=False)
            self.evicted += 1
            oldest.transport.close()
        if self.open >= self.max_connections:
            self.refused += 1
            return False
        self.open += 1
        self.idle[conn] = None
        return True

    def busy(self, conn: GuardedHttpToolsProtocol) -> None:
        self.idle.pop(conn, None)

    def rest(self, conn: GuardedHttpToolsProtocol) -> None:
        self.idle[conn] = None
        self.idle.move_to_end(conn)

    def gone(self, conn: GuardedHttpToolsProtocol) -> None:
        self.idle.pop(conn, None)
        self.open -= 1


_guard: ConnectionGuard | None = None


def install(settings: Settings) -> ConnectionGuard:
    """Configure this process's guard (``receiver serve``, in the process that serves)."""
    global _guard  # one guard per process, like the server it protects
    _guard = ConnectionGuard.from_settings(settings)
    return _guard


def guard() -> ConnectionGuard:
    global _guard
    if _guard is None:
        _guard = ConnectionGuard.from_settings(Settings())
    return _guard


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline, a header size cap and the guard."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard()
        self.admitted = False
        self.in_headers = True
        self.header_bytes = 0
        self.header_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ lifecycle

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.guard.admit(self):
            transport.write(_REFUSED)
            transport.close()
            return
        self.admitted = True
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        if self.admitted:
            self.guard.gone(self)
            self.admitted = False
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self.admitted:
            return
        super().data_received(data)
        if self.in_headers and not self.transport.is_closing():
            # Still no complete header block: all of this read went into it (llhttp buffers it).
            self.header_bytes += len(data)
            if self.header_bytes > self.guard.max_header_bytes:
                self.guard.too_large += 1
                self._cancel_header_timer()
                self.transport.write(_TOO_LARGE)
                self.transport.close()

    # ------------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self.in_headers:
            self.in_headers = True
            self.header_bytes = 0
            self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self.in_headers = False
        self.header_bytes = 0
        self._cancel_header_timer()
        self.guard.busy(self)
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.admitted and not self.transport.is_closing():
            self.guard.rest(self)

    # ------------------------------------------------------------------ the header deadline

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self.header_timer = self.loop.call_later(self.guard.header_timeout, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _header_timeout(self) -> None:
        self.header_timer = None
        if self.in_headers and not self.transport.is_closing():
            self.guard.timed_out += 1
            self.transport.close()


# --------------------------------------------------------------------------- concurrency

_UNLIMITED_PREFIXES = ("/stream/", "/admin/api/stream/", "/healthz", "/readyz", "/metrics", "/admin")


class ConcurrencyLimit:
    """At most ``limit`` requests in progress; the next one gets 503 with Retry-After at once."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.active = 0
        self.refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(_UNLIMITED_PREFIXES):
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            self.refused += 1
            body = b'{"detail":"too many requests in progress; retry shortly","code":"unavailable"}'
            await send({"type": "http.response.start", "status": 503, "headers": [
                (b"content-type", b"application/json"), (b"retry-after", b"1"),
                (b"content-length", str(len(body)).encode()),
            ]})
            await send({"type": "http.response.body", "body": body})
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1
