"""Reading request bodies safely: size caps before and after decompression, strict JSON."""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request

from receiver.errors import (
    BadRequestError,
    PayloadTooLargeError,
    RequestTimeoutError,
    UnsupportedMediaTypeError,
)

JSON_TYPES = ("application/json", "text/plain", "")


async def read_limited(request: Request, limit: int, body_seconds: float | None = None) -> bytes:
    """The raw body, refusing anything over ``limit`` bytes without reading it all, and a body
    still incomplete after ``body_seconds`` (408: a slow sender holds a request slot)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise PayloadTooLargeError(f"body is larger than {limit} bytes (RECEIVER_MAX_BODY_BYTES)")
        except ValueError:
            raise BadRequestError("invalid Content-Length header") from None
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(body_seconds):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLargeError(f"body is larger than {limit} bytes (RECEIVER_MAX_BODY_BYTES)")
                chunks.append(chunk)
    except ClientDisconnect:
        raise BadRequestError("client disconnected before the body was complete") from None
    except TimeoutError:
        raise RequestTimeoutError(f"the body was not received within {body_seconds:g} s") from None
    return b"".join(chunks)


def gunzip_limited(data: bytes, limit: int) -> bytes:
    """Decompress gzip (or zlib) data, refusing to inflate past ``limit`` bytes (zip bombs)."""
    decomp = zlib.decompressobj(wbits=47)  # 32 + 15: auto-detect gzip or zlib headers
    try:
        out = decomp.decompress(data, limit + 1)
        if len(out) > limit or decomp.unconsumed_tail:
            raise PayloadTooLargeError(
                f"decompressed body is larger than {limit} bytes (RECEIVER_MAX_DECOMPRESSED_BYTES)"
            )
        out += decomp.flush()
    except zlib.error:
        raise BadRequestError("body is not valid gzip data") from None
    if len(out) > limit:
        raise PayloadTooLargeError(
            f"decompressed body is larger than {limit} bytes (RECEIVER_MAX_DECOMPRESSED_BYTES)"
        )
    if not decomp.eof:
        raise BadRequestError("gzip data is truncated")
    return out


def require_json_content_type(content_type: str | None) -> None:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in JSON_TYPES or media.endswith("+json"):
        return
    raise UnsupportedMediaTypeError(f"expected application/json, got {media!r}")


def parse_json(data: bytes) -> Any:
    if not data.strip():
        raise BadRequestError("body is empty; expected a JSON object")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        reason = str(exc).split(":", 1)[0]
        raise BadRequestError(f"body is not valid JSON ({reason})") from None
