"""``GET /users/{product_id}/{user_id}/live-activity``: an agent pulls one user's recent actions.

What autoplay-sdk 0.13.0's pull path calls (its chatbot skills, a bridge at answer time), with
``Authorization: Bearer <mcp_key>``. The answer is ``{"actions": [...]}``, oldest first, each
action the SDK's SlimAction exactly as the stream frames carry it (``title``, ``description``,
``canonical_url``, ``type``, ``timestamp_start``/``_end``, ``session_id``, …).

* The window is bounded: the newest ``limit`` actions (``RECEIVER_LIVE_ACTIVITY_LIMIT``, 20; at
  most ``RECEIVER_LIVE_ACTIVITY_MAX_LIMIT``, 100) received in the last ``since_seconds``
  (``RECEIVER_LIVE_ACTIVITY_WINDOW_SECONDS``, 1800). Callers may narrow both; asking for more is
  a 400 that says what is allowed.
* 401 for a missing or unknown key, 403 for a key of another product (whether or not the product
  in the path exists, so a key holder learns nothing about other products), 200 with an empty list
  for a user with no recent actions.
* The product's privacy policy applies to what is returned, as it is now
  (:func:`receiver.ingest.privacy.rows_as_read`).
* Failed keys count towards the same lockout as the other routes; reads are rate-limited per key
  (``RECEIVER_READ_RATE_LIMIT``); queries run on the read-only pool with a statement timeout.

The MCP tools (:mod:`receiver.delivery.mcp`) read through the same functions.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from starlette.responses import Response

from receiver import apidoc, security
from receiver.delivery import activity
from receiver.errors import BadRequestError, ForbiddenError, UnauthorizedError
from receiver.ingest import privacy
from receiver.ingest.webhook import FastRoute
from receiver.responses import json_response
from receiver.runtime import Runtime
from receiver.storage import reads, store
from receiver.storage.products import ProductAuth
from receiver.storage.replication import Seen

router = APIRouter(tags=["pull"])

MAX_USER_ID_CHARS = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_SESSIONS = 50
MAX_SESSION_DAYS = 30
MAX_USERS = 100
MAX_SEARCH_HOURS = 7 * 24
MAX_SEARCH_TEXT = 200


# --------------------------------------------------------------------------- authentication


# What failed keys count against in the lockout (a product id on the other routes): every read
# route shares it, so a client guessing keys is locked out whichever product or route it tries.
LOCKOUT_SCOPE = "mcp-key"


async def authenticate(rt: Runtime, request: Request, authorization: str | None) -> ProductAuth:
    """The product whose MCP key is presented, after the lockout and per-key rate checks."""
    rt.refuse_if_shutting_down()
    scope = LOCKOUT_SCOPE
    rt.limits.check_auth_block(request, scope)
    key = security.bearer_token(authorization)
    with store.unavailable("checking the key"):
        product = await rt.directory.by_mcp_key(key)
    if product is None:
        rt.limits.auth_failed(request, scope)
        raise UnauthorizedError("missing or invalid Bearer MCP key")
    rt.limits.check_read(security.hash_secret(key or "").hex())
    return product


def owned(product: ProductAuth, product_id: str | None) -> None:
    """403 unless ``product_id`` (when given) is the key's own product."""
    if product_id is not None and product_id != product.product_id:
        raise ForbiddenError("this key belongs to another product")


# --------------------------------------------------------------------------- arguments


def user_id_arg(value: object) -> str:
    if not isinstance(value, str):
        raise BadRequestError(f"user_id must be a string, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise BadRequestError("user_id is required: the id your app identifies the user with")
    if len(text) > MAX_USER_ID_CHARS or _CONTROL.search(text):
        raise BadRequestError(
            f"user_id must be at most {MAX_USER_ID_CHARS} characters without control characters"
        )
    return text


def bounded_int(value: object, name: str, *, default: int, low: int, high: int) -> int:
    """An integer argument within [low, high]; None/empty → ``default``; anything else → 400."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise BadRequestError(f"{name} must be an integer between {low} and {high}")
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise BadRequestError(f"{name} must be an integer between {low} and {high}") from None
    if not isinstance(value, int) or not low <= value <= high:
        raise BadRequestError(f"{name} must be an integer between {low} and {high}")
    return value


# --------------------------------------------------------------------------- reads


async def confirmed(rt: Runtime, seen: Seen | None) -> None:
    """Return once a synchronous standby has what a read saw (at once without one), else 503:
    what an agent is told must survive a failover, as what a stream sends does."""
    if seen is not None:
        await rt.hub.confirmer.confirm(seen)


async def read_live(
    rt: Runtime, product: ProductAuth, user_id: object, limit: object = None, since: object = None
) -> dict[str, Any]:
    """The live-activity answer for one user of ``product`` (REST body, MCP structured content)."""
    s = rt.settings
    uid = user_id_arg(user_id)
    n = bounded_int(limit, "limit", default=min(s.live_activity_limit, s.live_activity_max_limit),
                    low=1, high=s.live_activity_max_limit)
    seconds = bounded_int(since, "since_seconds", default=s.live_activity_window_seconds,
                          low=1, high=s.live_activity_window_seconds)
    key = s.hash_key_bytes()
    ids = privacy.identity_as_stored(product.policy, uid, key)
    since_at = datetime.now(UTC) - timedelta(seconds=seconds)
    with store.unavailable("reading live activity"):
        async with rt.read_pool.acquire() as conn:
            rows, seen = await reads.live_activity(conn, product.product_id, ids, since_at, n)
    await confirmed(rt, seen)
    rows = privacy.rows_as_read(product.policy, rows, key)
    return activity.live_body(product.product_id, uid, rows, limit=n, since_seconds=seconds)


async def read_sessions(
    rt: Runtime, product: ProductAuth, user_id: object, days: object = None, limit: object = None
) -> dict[str, Any]:
    uid = user_id_arg(user_id)
    d = bounded_int(days, "days", default=7, low=1, high=MAX_SESSION_DAYS)
    n = bounded_int(limit, "limit", default=10, low=1, high=MAX_SESSIONS)
    key = rt.settings.hash_key_bytes()
    ids = privacy.identity_as_stored(product.policy, uid, key)
    since_at = datetime.now(UTC) - timedelta(days=d)
    with store.unavailable("reading sessions"):
        async with rt.read_pool.acquire() as conn:
            rows, seen = await reads.recent_rows(conn, product.product_id, ids, since_at)
    await confirmed(rt, seen)
    rows = privacy.rows_as_read(product.policy, rows, key)
    return {
        "product_id": product.product_id,
        "user_id": uid,
        "days": d,
        "sessions": activity.sessions_of(rows, n),
    }


ACTIONS = ("pageview", "click", "submit", "type", "copy", "custom")


async def find_users(
    rt: Runtime,
    product: ProductAuth,
    *,
    action: object = None,
    text: object = None,
    page: object = None,
    hours: object = None,
    limit: object = None,
) -> dict[str, Any]:
    if action is not None and action not in ACTIONS:
        raise BadRequestError(f"action must be one of: {', '.join(ACTIONS)}")
    for name, value in (("text", text), ("page", page)):
        if value is not None and (
            not isinstance(value, str) or not value.strip() or len(value) > MAX_SEARCH_TEXT
            or _CONTROL.search(value)
        ):
            raise BadRequestError(f"{name} must be 1-{MAX_SEARCH_TEXT} characters of text")
    if action is None and text is None and page is None:
        raise BadRequestError("give at least one of action, text or page")
    h = bounded_int(hours, "since_hours", default=24, low=1, high=MAX_SEARCH_HOURS)
    n = bounded_int(limit, "limit", default=20, low=1, high=MAX_USERS)
    since_at = datetime.now(UTC) - timedelta(hours=h)
    with store.unavailable("searching users"):
        async with rt.read_pool.acquire() as conn:
            matches, seen = await reads.find_users(
                conn, product.product_id, since=since_at, action=action,  # type: ignore[arg-type]
                text_like=reads.like(text.strip()) if isinstance(text, str) else None,
                page_like=reads.like(page.strip()) if isinstance(page, str) else None,
                limit=n,
            )
    await confirmed(rt, seen)
    policy, key = product.policy, rt.settings.hash_key_bytes()
    users = [
        {
            "user_id": privacy.scrub_identity(policy, m.distinct_id, key),
            "matches": m.matches,
            "last_at": m.last_at,
            "last_title": privacy.scrub_text(policy, m.last_title, key),
            "last_page": privacy.scrub_text(policy, m.last_page, key) if m.last_page else None,
        }
        for m in matches
    ]
    filters = ", ".join(
        f"{k}={v!r}" for k, v in (("action", action), ("text", text), ("page", page)) if v is not None
    )
    return {"product_id": product.product_id, "since_hours": h, "filters": filters, "users": users}


# --------------------------------------------------------------------------- REST


@router.get(
    "/users/{product_id}/{user_id:path}/live-activity",
    responses={
        200: {"model": apidoc.LiveActivity, "description": "The user's recent actions, oldest first."},
        400: apidoc.error("limit or since_seconds out of range, or an invalid user_id."),
        401: apidoc.error("Missing or invalid Bearer MCP key."),
        403: apidoc.error("The key belongs to another product."),
        404: apidoc.error("No such route: a path segment holds a line break."),
        429: apidoc.error("Too many failed keys, or reads over this key's rate; retry later."),
        503: apidoc.error("Database unavailable, the read timed out, or shutting down; retry."),
    },
)
async def live_activity(
    product_id: str,
    user_id: str,
    request: Request,
    limit: Annotated[
        str | None, Query(description="Most actions to return (default 20, at most 100).")
    ] = None,
    since_seconds: Annotated[
        str | None, Query(description="Only actions of the last N seconds (default and most: 1800).")
    ] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> Response:
    """Documents the route; requests are served by :func:`serve_live_activity` (see :func:`mount`)."""
    return await serve_live_activity(request)


async def serve_live_activity(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    product = await authenticate(rt, request, request.headers.get("authorization"))
    owned(product, request.path_params["product_id"])
    query = request.query_params
    body = await read_live(
        rt, product, request.path_params["user_id"], query.get("limit"), query.get("since_seconds")
    )
    return json_response(body, headers={"Cache-Control": "no-store"})


def mount(app: Any) -> None:
    """Serve live activity on a plain Starlette route ahead of the documented one, as the webhook
    is: FastAPI's per-request parameter solving was a tenth of a read's CPU."""
    app.router.routes.insert(0, FastRoute(
        "/users/{product_id}/{user_id:path}/live-activity", serve_live_activity,
        "live_activity_fast", methods=["GET"], tags=router.tags,
    ))
