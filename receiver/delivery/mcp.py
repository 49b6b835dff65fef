"""The MCP server at ``/mcp``: chat platforms' agents read live user activity themselves.

Built on the official ``mcp`` SDK (``MCPServer``, streamable HTTP) and mounted in the receiver's
app; its session manager runs inside the app's lifespan. It is *stateless* with plain JSON
answers: no session lives in a process, so any worker of ``receiver serve --workers N`` answers
any request, and a client cannot pile up sessions.

In front of the SDK, :class:`Endpoint` checks every request, in this order:

1. ``Origin``: absent (servers, CLIs) or the receiver's own public origin, or one of
   ``RECEIVER_MCP_ALLOWED_ORIGINS``; anything else is 403. A web page that reaches a receiver on
   localhost by DNS rebinding is same-origin with it *by name*, so its requests carry its own
   origin (``http://evil.example:8000``) and stop here, as the MCP specification asks.
2. ``Authorization: Bearer <mcp_key>``: 401 without a valid key (failures count towards the same
   lockout as the other routes), 429 past the key's read rate (``RECEIVER_READ_RATE_LIMIT``).
3. The body cap (``RECEIVER_MAX_BODY_BYTES``): 413.

The key decides the product: a tool's ``product_id`` argument is optional, and naming another
product is an error. Every tool is read-only (``readOnlyHint``), bounded in rows and arguments,
and runs on the read-only pool with a statement timeout (:mod:`receiver.delivery.pull`). Tools:

* ``get_live_user_activity``: the same window as ``GET /users/{product}/{user}/live-activity``;
* ``get_user_sessions``: a user's recent sessions with the pages visited in order;
* ``find_users_who``: users whose actions match (e.g. clicked "Upgrade" on billing today).

``RECEIVER_MCP_TOOLS`` narrows which tools are served (a customer-facing bot may not need
``find_users_who``, which lists other users).
"""

# No ``from __future__ import annotations`` here: the SDK reads the tools' annotations at run time,
# and their bounds come from the settings (closure variables, which string annotations lose).
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from receiver import apidoc
from receiver.delivery import activity, pull
from receiver.errors import (
    ClientError,
    ForbiddenError,
    PayloadTooLargeError,
    ReceiverError,
    UnavailableError,
)
from receiver.responses import error_response
from receiver.runtime import Runtime
from receiver.settings import Settings
from receiver.storage.products import ProductAuth

log = logging.getLogger("receiver.mcp")

PATH = "/mcp"
TOOLS = ("get_live_user_activity", "get_user_sessions", "find_users_who")
_STATE_KEY = "receiver_mcp_product"
_READ_ONLY = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)

INSTRUCTIONS = (
    "Read-only access to what the users of one product are doing in its app, recorded by the "
    "receiver from the app's own analytics events (PostHog or Amplitude). The key you connect "
    "with decides the product, so product_id can always be left out. user_id is the id the app "
    "identifies the signed-in user with (what it passes to posthog.identify or "
    "amplitude.setUserId), not an email or a conversation id unless the app uses those."
)
LIVE_DESCRIPTION = (
    "Get what this user just did in the app: their most recent actions (pages they landed on, "
    "buttons and links they clicked, forms they submitted), oldest first, ending with the page "
    "they are on now. Call it at the start of a conversation and again whenever your answer "
    "depends on what the user did or where they are: they say they are stuck, ask how to do "
    "something 'here' or 'on this page', ask why something did not work, or ask what to do next. "
    "Do not call it for general questions (pricing, policies, documentation) that do not depend on "
    "their recent activity. If it returns nothing, answer normally without mentioning it."
)
SESSIONS_DESCRIPTION = (
    "Get this user's recent sessions (up to 30 days back): when each started, how long it lasted, "
    "how many actions, and the pages visited in order. Call it when the question reaches further "
    "back than the last half hour ('last time I tried…', 'yesterday', 'I keep coming back to…') or "
    "to see how the user usually moves through the app. For what they are doing right now, call "
    "get_live_user_activity instead."
)
FIND_DESCRIPTION = (
    "Find users who did something in the app, most recent first, e.g. users who clicked "
    "'Upgrade' on the billing page today: action='click', text='Upgrade', page='billing', "
    "since_hours=24. Filters match anywhere, case-insensitively, and combine; give at least one. "
    "Call it for questions about other users (support triage, 'who else hit this page'), never "
    "to answer the signed-in user about themselves (use get_live_user_activity)."
)


class Sessions(BaseModel):
    model_config = ConfigDict(extra="allow")

    product_id: str
    user_id: str
    days: int
    sessions: list[dict[str, Any]]


class Users(BaseModel):
    model_config = ConfigDict(extra="allow")

    product_id: str
    since_hours: int
    filters: str
    users: list[dict[str, Any]]


def _context(ctx: Context) -> tuple[Runtime, ProductAuth]:
    request = ctx.request_context.request
    state = getattr(request, "scope", {}).get("state", {}) if request is not None else {}
    product = state.get(_STATE_KEY)
    if product is None:  # only Endpoint reaches the SDK, and it always sets it
        raise ToolError("not authenticated")
    rt: Runtime = request.app.state.runtime  # type: ignore[union-attr]
    return rt, product


async def _run(ctx: Context, product_id: str | None, read: Any, text: Any) -> CallToolResult:
    rt, product = _context(ctx)
    try:
        if product_id is not None and product_id != product.product_id:
            raise ForbiddenError(
                f"this key reads product {product.product_id!r} only; leave product_id out"
            )
        body = await read(rt, product)
    except ClientError as exc:
        raise ToolError(exc.detail) from None
    except UnavailableError as exc:
        raise ToolError(f"temporarily unavailable ({exc.detail}); try again shortly") from None
    return CallToolResult(content=[TextContent(type="text", text=text(body))], structured_content=body)


def build(settings: Settings) -> MCPServer[Any]:
    """The MCP server of one app (tools bounded by its settings)."""
    server: MCPServer[Any] = _quiet_server()
    enabled = _tools(settings)
    max_limit = settings.live_activity_max_limit
    window = settings.live_activity_window_seconds

    async def get_live_user_activity(
        user_id: Annotated[str, Field(description="The app's id for the user (posthog.identify).")],
        ctx: Context,
        product_id: Annotated[
            str | None, Field(description="Optional: the key decides the product.")
        ] = None,
        limit: Annotated[
            int | None,
            Field(ge=1, le=max_limit, description=f"Most actions to return (default "
                  f"{min(settings.live_activity_limit, max_limit)}, at most {max_limit})."),
        ] = None,
        since_seconds: Annotated[
            int | None,
            Field(ge=1, le=window, description=f"Only the last N seconds (default and most {window})."),
        ] = None,
    ) -> Annotated[CallToolResult, apidoc.LiveActivity]:
        return await _run(
            ctx, product_id,
            lambda rt, p: pull.read_live(rt, p, user_id, limit, since_seconds),
            activity.live_text,
        )

    async def get_user_sessions(
        user_id: Annotated[str, Field(description="The app's id for the user (posthog.identify).")],
        ctx: Context,
        product_id: Annotated[
            str | None, Field(description="Optional: the key decides the product.")
        ] = None,
        days: Annotated[
            int | None,
            Field(ge=1, le=pull.MAX_SESSION_DAYS, description="How far back, in days (default 7)."),
        ] = None,
        limit: Annotated[
            int | None,
            Field(ge=1, le=pull.MAX_SESSIONS, description="Most sessions (default 10)."),
        ] = None,
    ) -> Annotated[CallToolResult, Sessions]:
        return await _run(
            ctx, product_id,
            lambda rt, p: pull.read_sessions(rt, p, user_id, days, limit),
            lambda body: activity.sessions_text(body["user_id"], body["sessions"], body["days"]),
        )

    async def find_users_who(
        ctx: Context,
        action: Annotated[
            Literal["pageview", "click", "submit", "type", "copy", "custom"] | None,
            Field(description="What they did."),
        ] = None,
        text: Annotated[
            str | None,
            Field(min_length=1, max_length=pull.MAX_SEARCH_TEXT,
                  description="Words on what they clicked or typed into (or in the action's title)."),
        ] = None,
        page: Annotated[
            str | None,
            Field(min_length=1, max_length=pull.MAX_SEARCH_TEXT,
                  description="Part of the page's URL, e.g. 'billing' or '/settings'."),
        ] = None,
        since_hours: Annotated[
            int | None,
            Field(ge=1, le=pull.MAX_SEARCH_HOURS, description="How far back, in hours (default 24)."),
        ] = None,
        limit: Annotated[
            int | None, Field(ge=1, le=pull.MAX_USERS, description="Most users (default 20).")
        ] = None,
        product_id: Annotated[
            str | None, Field(description="Optional: the key decides the product.")
        ] = None,
    ) -> Annotated[CallToolResult, Users]:
        return await _run(
            ctx, product_id,
            lambda rt, p: pull.find_users(
                rt, p, action=action, text=text, page=page, hours=since_hours, limit=limit
            ),
            lambda body: activity.users_text(body["users"], body["filters"], body["since_hours"]),
        )

    for fn, title, description in (
        (get_live_user_activity, "Get live user activity", LIVE_DESCRIPTION),
        (get_user_sessions, "Get user sessions", SESSIONS_DESCRIPTION),
        (find_users_who, "Find users who…", FIND_DESCRIPTION),
    ):
        if fn.__name__ in enabled:
            server.add_tool(fn, title=title, description=description, annotations=_READ_ONLY)
    server.streamable_http_app(
        streamable_http_path=PATH,
        stateless_http=True,
        json_response=True,
        max_request_body_size=settings.max_body_bytes,
        # Host/Origin are checked by Endpoint (the SDK's defaults would refuse every Host but
        # loopback ones, i.e. any deployment behind a name).
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    return server


def _tools(settings: Settings) -> frozenset[str]:
    names = frozenset(t.strip() for t in settings.mcp_tools.split(",") if t.strip())
    unknown = names - set(TOOLS)
    if unknown:
        raise ValueError(f"RECEIVER_MCP_TOOLS: unknown tools {sorted(unknown)}; known: {TOOLS}")
    return names


def _quiet_server() -> MCPServer[Any]:
    # MCPServer() calls logging.basicConfig (a rich handler on the root logger) unless the root
    # already has a handler: give it one for the duration, so the receiver's logging stays ours.
    root = logging.getLogger()
    placeholder = logging.NullHandler()
    added = not root.handlers
    if added:
        root.addHandler(placeholder)
    try:
        server: MCPServer[Any] = MCPServer(
            "autoplay-receiver", title="autoplay receiver: live user activity",
            instructions=INSTRUCTIONS, version="0.1.0",
        )
    finally:
        if added:
            root.removeHandler(placeholder)
    # One INFO line per stateless request ("Terminating session: None") is noise next to our
    # access log.
    for name in ("mcp.server.streamable_http", "mcp.server.streamable_http_manager"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return server


@asynccontextmanager
async def running(server: MCPServer[Any]) -> AsyncIterator[None]:
    """The SDK's session manager, for the app's lifespan."""
    async with server.session_manager.run():
        yield


class Endpoint:
    """The ASGI app at ``/mcp``: origin, key and size checks, then the SDK (module docstring)."""

    def __init__(self, server: MCPServer[Any]) -> None:
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            rt: Runtime = request.app.state.runtime
            _check_origin(rt.settings, request.headers.get("origin"))
            product = await pull.authenticate(rt, request, request.headers.get("authorization"))
            declared = request.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > rt.settings.max_body_bytes:
                raise PayloadTooLargeError(f"body is larger than {rt.settings.max_body_bytes} bytes")
        except ReceiverError as exc:
            response = error_response(exc)
            if exc.status_code == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="mcp"'
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})[_STATE_KEY] = product
        await self.server.session_manager.handle_request(scope, receive, send)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _check_origin(settings: Settings, origin: str | None) -> None:
    if origin is None:
        return
    allowed = set(settings.mcp_origins())
    if settings.public_url:
        allowed.add(_origin(settings.public_url))
    if origin.strip().rstrip("/").lower() not in allowed:
        raise ForbiddenError(
            f"Origin {origin[:100]!r} may not call the MCP server (RECEIVER_MCP_ALLOWED_ORIGINS)"
        )
