"""``POST /sessions/link``: link a browser session to a chat conversation (the legacy
connector's endpoint, called by the SDK's browser snippet ``format_reactive_session_link_script``).

Body: ``{"product_id", "session_id", "conversation_id"}`` (plus ``token``, see below), JSON,
at most :data:`MAX_BODY_BYTES`. From then on every event of that session that the receiver
stores carries ``conversation_id`` — top-level and per action — on the stream, on push and in
the ``events`` table (:func:`receiver.storage.store.link_session`); events stored before
stay as they were. Linking again replaces the conversation.

The hosted connector asks for no credentials at all. Here each product chooses
(``products.session_link``, set at registration or with ``receiver product session-link``):

* ``token`` (default): the body's ``token`` must be the product's capture token — the public
  key its pages already carry for posthog-js, so a page that can capture can link;
* ``open``: no credential, as the hosted connector (the stock snippet sends none);
* ``off``: refused (403).

Everyone can reach it from a browser, so it is bounded: a token bucket per client address
(``RECEIVER_LINK_RATE_LIMIT``, ``RECEIVER_LINK_BURST``), the failed-authentication lockout,
at most 256 printable characters per id, and it only ever writes one counter row.

CORS: the snippet's ``fetch`` sends ``Content-Type: application/json`` cross-origin, so the
browser preflights it; :class:`LinkCORS` answers the ``OPTIONS`` and adds
``Access-Control-Allow-Origin`` to every answer of this path (errors included), reflecting the
origin without credentials. No other route is affected.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, Final

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from receiver import apidoc, security
from receiver.errors import BadRequestError, ForbiddenError, NotFoundError, UnauthorizedError
from receiver.ingest.bodies import parse_json, read_limited, require_json_content_type
from receiver.responses import json_response
from receiver.runtime import Runtime
from receiver.storage import store

router = APIRouter(tags=["sessions"])

PATH: Final = "/sessions/link"
MAX_BODY_BYTES: Final = 4096
MAX_ID_CHARS: Final = 256
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]+")


class SessionLink(BaseModel):
    """The body of ``POST /sessions/link`` (documentation; parsing is done by hand)."""

    product_id: str = Field(description="The product the page belongs to.")
    session_id: str = Field(description="PostHog session id (posthog.get_session_id()).")
    conversation_id: str = Field(description="The chat conversation to link the session to.")
    token: str | None = Field(
        default=None,
        description="The product's capture token; required unless the product's session_link "
        "is 'open'.",
    )


class Linked(BaseModel):
    status: str = Field(description="Always 'linked'.")
    product_id: str
    session_id: str
    conversation_id: str


def _field(data: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = data.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise BadRequestError(f"{name} must be a non-empty string")
    if len(value) > MAX_ID_CHARS or not _PRINTABLE.fullmatch(value):
        raise BadRequestError(
            f"{name} must be at most {MAX_ID_CHARS} characters, with no control characters"
        )
    return value


@router.post(
    PATH,
    responses={
        200: {"model": Linked, "description": "Linked: later events of the session carry it."},
        400: apidoc.error("Malformed body."),
        401: apidoc.error("Missing or wrong capture token (the product's session_link is 'token')."),
        403: apidoc.error("Session linking is off for this product."),
        404: apidoc.error("Unknown product."),
        413: apidoc.error("Body larger than 4 KiB."),
        415: apidoc.error("Not JSON."),
        429: apidoc.error("Too many requests from this address; retry after Retry-After."),
        503: apidoc.error("Database unavailable or shutting down; retry."),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": SessionLink.model_json_schema()}},
        }
    },
)
async def link(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    rt.refuse_if_shutting_down()
    rt.limits.check_client_rate(
        request, PATH, rate=rt.settings.link_rate_limit, burst=rt.settings.link_burst
    )
    raw = await read_limited(request, MAX_BODY_BYTES)
    require_json_content_type(request.headers.get("content-type"))
    data = parse_json(raw)
    if not isinstance(data, dict):
        raise BadRequestError("body must be a JSON object")
    product_id = _field(data, "product_id")
    session_id = _field(data, "session_id")
    conversation_id = _field(data, "conversation_id")
    token = _field(data, "token", required=False)
    assert product_id and session_id and conversation_id
    product = await rt.directory_get(product_id)
    if product is None:
        raise NotFoundError(f"unknown product {product_id!r}")
    if product.session_link == "off":
        raise ForbiddenError("session linking is off for this product")
    if product.session_link != "open":
        rt.limits.check_auth_block(request, product_id)
        if not security.equals(token, product.capture_token):
            rt.limits.auth_failed(request, product_id)
            raise UnauthorizedError(
                "token must be the product's capture token (or the product's session_link 'open')"
            )
    with store.unavailable("linking the session"):
        async with rt.pool.acquire() as conn:
            await store.link_session(conn, product_id, session_id, conversation_id)
    return json_response({
        "status": "linked", "product_id": product_id, "session_id": session_id,
        "conversation_id": conversation_id,
    })


# --------------------------------------------------------------------------- CORS

ALLOWED_METHODS: Final = "POST, OPTIONS"


class LinkCORS:
    """CORS for ``POST /sessions/link`` only (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH:
            await self.app(scope, receive, send)
            return
        origin = Headers(scope=scope).get("origin")
        if scope["method"] == "OPTIONS":
            headers = {"Allow": ALLOWED_METHODS, "Vary": "Origin"}
            if origin is not None:
                headers.update(_cors_headers(origin))
                headers["Access-Control-Max-Age"] = "86400"
            await Response(status_code=204, headers=headers)(scope, receive, send)
            return
        if origin is None:
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, _with_cors(send, origin))


def _cors_headers(origin: str) -> dict[str, str]:
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": ALLOWED_METHODS,
        "Access-Control-Allow-Headers": "Content-Type",
    }


def _with_cors(send: Send, origin: str) -> Callable[[Message], Awaitable[None]]:
    extra = _cors_headers(origin)

    async def send_with_cors(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            for name, value in extra.items():
                headers[name] = value
            headers.add_vary_header("Origin")
        await send(message)

    return send_with_cors
