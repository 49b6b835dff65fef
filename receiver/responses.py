"""JSON responses with orjson, and the mapping from our errors to HTTP."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from receiver.errors import ReceiverError, UnavailableError

log = logging.getLogger("receiver")


def json_response(
    content: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(content), status_code=status_code, headers=headers,
        media_type="application/json",
    )


def error_response(exc: ReceiverError) -> Response:
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, int(exc.retry_after)))
    return json_response(
        {"detail": exc.detail, "code": exc.code}, exc.status_code, headers=headers
    )


async def on_receiver_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ReceiverError)
    if isinstance(exc, UnavailableError):
        log.warning("503 %s %s: %s", request.method, request.url.path, exc.detail)
    return error_response(exc)


async def on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    detail = f"{where}: {first.get('msg', 'invalid request')}" if where else "invalid request"
    return json_response({"detail": detail, "code": "bad_request"}, 400)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    return json_response(
        {"detail": exc.detail, "code": "http_error"}, exc.status_code, headers=exc.headers
    )


async def on_unexpected(request: Request, exc: Exception) -> Response:
    # Our fault, whatever it was: senders must retry rather than drop (never a 4xx here).
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(UnavailableError("internal error; retry later", retry_after=1))
