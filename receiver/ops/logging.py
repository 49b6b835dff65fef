"""Logs: one JSON object per line (``RECEIVER_LOG_JSON=true``) or plain text, with request ids.

* Every HTTP request gets a request id: the caller's ``X-Request-ID`` when it is a sane token
  (1-128 characters of ``A-Z a-z 0-9 . _ : -``), a fresh one otherwise. It is echoed in the
  response's ``X-Request-ID`` header and attached to every log record written while the
  request is handled (``request_id``).
* One access line per request (logger ``receiver.access``): method, path (never the query
  string: admin stream tickets travel there), route, product, status, duration.
* Nothing secret reaches a log line: a filter masks email addresses, Bearer tokens, stream
  keys (``rsk_``), capture tokens (``phc_``) and ``token=``/``ticket=``/``secret=`` values in
  every message and traceback, with :func:`receiver.security.mask`.

The request middleware also feeds the ingest metrics (counts by route and status, ack
latency), so a request is measured exactly once.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from receiver.ingest.privacy import redact_emails
from receiver.ops.metrics import INGEST_TAGS
from receiver.security import mask

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
REQUEST_ID_HEADER = "x-request-id"
MAX_MESSAGE_CHARS = 8192
MAX_LOGGED_PATH_CHARS = 1024
_SANE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

_SECRETS = re.compile(
    r"(?P<bearer>(?i:bearer)\s+)(?P<b>[^\s\"',;]+)"
    r"|(?P<key>\b(?:rsk|phc|phx)_[A-Za-z0-9_\-]{6,})"
    r"|(?P<param>(?i:token|ticket|secret|password|api_key|stream_key|x-posthog-secret)[\"']?\s*[=:]\s*[\"']?)"
    r"(?P<v>[^\s\"'&,;]+)"
)
# Record attributes that are not "extra" fields: the standard ones, and uvicorn's ANSI-coloured
# duplicate of its own message.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "color_message",
}


def scrub(text: str) -> str:
    """Mask emails and secrets in free text (log messages and tracebacks)."""

    def secret(m: re.Match[str]) -> str:
        if m.group("b"):
            return m.group("bearer") + mask(m.group("b"))
        if m.group("key"):
            return mask(m.group("key"))
        return m.group("param") + mask(m.group("v"))

    # The privacy scanner: linear in the text (a log line can carry an attacker's path).
    text = redact_emails(text, mask)
    return _SECRETS.sub(secret, text)


def new_request_id() -> str:
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Attach the current request id and scrub the message (on handlers, so every logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not lose the record
            message = str(record.msg)
        if len(message) > MAX_MESSAGE_CHARS:
            # Scrubbing is linear, but a client chooses much of what is logged (a 64 KiB path).
            message = message[:MAX_MESSAGE_CHARS] + "…[truncated]"
        record.msg = scrub(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, scrub(value))
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            # Which worker (receiver serve --workers N): they share the log stream.
            "pid": record.process,
        }
        for key, value in vars(record).items():
            if key in _STANDARD or key.startswith("_") or value is None:
                continue
            out[key] = value
        if record.exc_text:
            out["exc"] = record.exc_text
        elif record.exc_info:
            out["exc"] = scrub(self.formatException(record.exc_info))
        return orjson.dumps(out, default=str).decode()


# Characters that would let a value start a new log line or rewrite the terminal: C0 and C1
# controls, DEL, and the Unicode line and paragraph separators.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_controls(text: str) -> str:
    """``text`` with control characters written as ``\\n``, ``\\x1b``, ``\\u2028``…, so
    one record is one line whatever a client put in a path or header (``%0a`` forges none)."""
    return _UNPRINTABLE.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), text)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        # The message only: a traceback, appended after this by format(), keeps its newlines.
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "request_id", None) is None:
            record.request_id = "-"
        line = super().format(record)
        extras = {
            k: v for k, v in vars(record).items()
            if k not in _STANDARD and k != "request_id" and not k.startswith("_") and v is not None
        }
        if extras:
            line += " " + " ".join(f"{k}={escape_controls(str(v))}" for k, v in extras.items())
        return line


def configure(*, level: str = "INFO", json: bool = False, stream: Any = None) -> logging.Handler:
    """Install one handler on the root logger (replacing earlier ones); uvicorn's propagate."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    return handler


# --------------------------------------------------------------------------- middleware

access_log = logging.getLogger("receiver.access")


class RequestContextMiddleware:
    """Request id, one access log line, and the ingest metrics, for every HTTP request.

    Pure ASGI (not ``BaseHTTPMiddleware``) so SSE responses stream untouched.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                incoming = value.decode("latin-1").strip()
                break
        request_id = incoming if incoming and _SANE_ID.fullmatch(incoming) else new_request_id()
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        acked: float | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status, acked
            if message["type"] == "http.response.start":
                status = int(message["status"])
                acked = time.perf_counter() - started
                headers = list(message.get("headers", ()))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if acked is None:
                status = 503  # what the unexpected-error handler answers
            raise
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None)
            tags = set(getattr(route, "tags", None) or ())
            app = scope.get("app")
            rt = getattr(getattr(app, "state", None), "runtime", None)
            if rt is not None and template and tags & INGEST_TAGS:
                rt.metrics.observe_request(template, status, acked if acked is not None else elapsed)
            if rt is not None and template and status in (401, 403):
                kind = next(iter(getattr(route, "tags", None) or ()), "other")
                rt.metrics.auth_failures.labels(str(kind)).inc()
            path = scope.get("path", "")
            if len(path) > MAX_LOGGED_PATH_CHARS:
                path = path[:MAX_LOGGED_PATH_CHARS] + "…"
            if not path.startswith(("/healthz", "/readyz", "/metrics")):
                access_log.info(
                    "%s %s %d",
                    scope.get("method", "-"),
                    path,
                    status,
                    extra={
                        "method": scope.get("method"),
                        "path": path,
                        "route": template,
                        "product_id": (scope.get("path_params") or {}).get("product_id"),
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                    },
                )
            request_id_var.reset(token)
