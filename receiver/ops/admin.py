"""The admin page (``/admin``) and the admin-only JSON and SSE endpoints it reads.

Authentication. The page itself (HTML, JS, CSS, no data) is served to anyone; every data call
needs the admin credential, checked like ``POST /products``: ``Authorization: Bearer
$RECEIVER_ADMIN_TOKEN``, or — while ``RECEIVER_ADMIN_ALLOW_LOOPBACK`` is true (the default) — a
trusted local caller (receiver.security.trusted_local: a loopback peer with no proxy
forwarding headers, a local ``Host``, no foreign ``Origin``; a web page on the same machine
cannot pass for one, even by DNS rebinding). The page takes the token from the URL
fragment (``/admin#token=...``: a fragment is never sent to a server nor written to an access
log), keeps it in ``sessionStorage`` and removes it from the address bar, or asks for it.

A browser ``EventSource`` cannot send an ``Authorization`` header, so the live tail trades the
token for a **stream ticket**: ``POST /admin/api/stream-ticket/{product_id}`` (token in the
header) returns a ticket valid for 60 seconds and for that one product, signed with a random
key that the first receiver stored in Postgres (``server_secrets``, so every process and every
receiver on the database verifies it; never derived from the token), which the page puts
in the query string of ``GET /admin/api/stream/{product_id}?ticket=...``. That endpoint
serves the very same SSE generator as ``/stream/{product_id}`` (same frames, ``since``,
``replay`` and ``Last-Event-ID``); the SDK's ``/stream`` path is unchanged. A leaked ticket
is worth one product's stream for at most a minute, and never the token.

Endpoints: ``GET /admin``, ``GET /admin/static/{file}``, ``GET /admin/api/products``,
``GET /admin/api/rate``, ``POST /admin/api/stream-ticket/{product_id}``,
``GET /admin/api/stream/{product_id}``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Query, Request
from starlette.responses import Response

from receiver import security
from receiver.delivery import stream
from receiver.errors import BadRequestError, ForbiddenError, NotFoundError, UnauthorizedError
from receiver.ingest import privacy
from receiver.responses import json_response
from receiver.runtime import Runtime
from receiver.storage import store

router = APIRouter(tags=["admin"], include_in_schema=False)

STATIC_DIR = Path(__file__).resolve().parents[1] / "static" / "admin"
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
TICKET_SECONDS = 60
TICKET_CLOCK_SKEW_SECONDS = 5
AUTH_SCOPE = "admin"  # key of the failed-authentication lockout
# A file name the page references: anything else is a 404 before the filesystem is asked (a
# NUL in the name made pathlib raise, answered as a 503 with a traceback in the log).
_STATIC_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")


# --------------------------------------------------------------------------- auth


def is_admin(request: Request, authorization: str | None) -> bool:
    """The admin rule (receiver.security.admin_allowed) applied to one request."""
    settings = request.app.state.runtime.settings
    token = settings.admin_token
    return security.admin_allowed(
        token=token.get_secret_value() if token is not None else None,
        allow_loopback=settings.admin_allow_loopback,
        authorization=authorization,
        peer=request.client.host if request.client else None,
        headers=request.headers,
        public_url=settings.public_url,
    )


def require_admin(request: Request, authorization: str | None) -> None:
    rt: Runtime = request.app.state.runtime
    rt.limits.check_auth_block(request, AUTH_SCOPE)
    if is_admin(request, authorization):
        return
    rt.limits.auth_failed(request, AUTH_SCOPE)
    if rt.settings.admin_token is None:
        raise ForbiddenError(
            "the admin API is open to trusted loopback clients only (no RECEIVER_ADMIN_TOKEN): "
            "no proxy headers, a local Host, no foreign Origin"
        )
    raise UnauthorizedError("missing or invalid 'Authorization: Bearer <RECEIVER_ADMIN_TOKEN>'")


def _mac(key: bytes, product_id: str, expires: int) -> str:
    return hmac.new(key, f"{product_id}\0{expires}".encode(), hashlib.sha256).hexdigest()


def issue_ticket(rt: Runtime, product_id: str, now: float | None = None) -> str:
    expires = int((now if now is not None else time.time()) + TICKET_SECONDS)
    return f"{expires}.{_mac(rt.ticket_key, product_id, expires)}"


def ticket_ok(rt: Runtime, product_id: str, ticket: str | None, now: float | None = None) -> bool:
    """A ticket this installation issued for this product, not expired, and not claiming to
    live longer than a ticket ever does (the clocks of the processes may differ a little)."""
    if not ticket or "." not in ticket or len(ticket) > 200:
        return False
    expires_text, _, mac = ticket.partition(".")
    try:
        expires = int(expires_text)
    except ValueError:
        return False
    now = now if now is not None else time.time()
    fresh = now <= expires <= now + TICKET_SECONDS + TICKET_CLOCK_SKEW_SECONDS
    return hmac.compare_digest(mac, _mac(rt.ticket_key, product_id, expires)) and fresh


# --------------------------------------------------------------------------- page


def _static(name: str) -> Response:
    if not _STATIC_NAME.fullmatch(name):
        raise NotFoundError("no such file")
    path = (STATIC_DIR / name).resolve()
    if path.parent != STATIC_DIR or path.suffix not in STATIC_TYPES or not path.is_file():
        raise NotFoundError("no such file")
    return Response(path.read_bytes(), media_type=STATIC_TYPES[path.suffix], headers=PAGE_HEADERS)


@router.get("/admin")
async def page() -> Response:
    return _static("index.html")


@router.get("/admin/static/{name}")
async def static_file(name: str) -> Response:
    return _static(name)


# --------------------------------------------------------------------------- data


@router.get("/admin/api/products")
async def list_products(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Response:
    """Every product with its counters (subscribers: streams open on this process)."""
    require_admin(request, authorization)
    rt: Runtime = request.app.state.runtime
    since = datetime.now(UTC) - timedelta(minutes=5)
    with store.unavailable("listing products"):
        async with rt.pool.acquire() as conn:
            rows = await conn.fetch(
                """
                SELECT p.product_id, p.last_position, p.created_at, p.privacy_policy::text AS policy,
                       (SELECT max(e.received_at) FROM events e
                         WHERE e.product_id = p.product_id) AS last_event_at,
                       (SELECT count(*) FROM events e
                         WHERE e.product_id = p.product_id AND e.received_at >= $1) AS events_5m
                FROM products p ORDER BY p.product_id
                """,
                since,
            )
    out = []
    for r in rows:
        feed = rt.hub.feeds.get(r["product_id"])
        try:
            policy = privacy.Policy.from_json(orjson.loads(r["policy"]), stored=True).to_json()
        except privacy.PolicyError:
            policy = {"error": "invalid stored policy"}
        out.append(
            {
                "product_id": r["product_id"],
                "events_total": r["last_position"],
                "last_position": r["last_position"],
                "last_event_at": r["last_event_at"].isoformat() if r["last_event_at"] else None,
                "events_last_5m": r["events_5m"],
                "subscribers": feed.subscribers if feed is not None else 0,
                "created_at": r["created_at"].isoformat(),
                "privacy_policy": policy,
            }
        )
    return json_response({"products": out, "generated_at": datetime.now(UTC).isoformat()})


@router.get("/admin/api/rate")
async def ingest_rate(
    request: Request,
    product_id: Annotated[str | None, Query()] = None,
    window: Annotated[int, Query(ge=10, le=3600)] = 300,
    step: Annotated[int, Query(ge=1, le=600)] = 5,
    authorization: Annotated[str | None, Header()] = None,
) -> Response:
    """Events received per ``step`` seconds over the last ``window`` seconds (zero-filled)."""
    require_admin(request, authorization)
    rt: Runtime = request.app.state.runtime
    if window // step > 720:
        raise BadRequestError("window / step must be at most 720 points")
    now = int(time.time())
    end = now - now % step + step  # exclusive end of the current bucket
    start = end - -(-window // step) * step
    since = datetime.fromtimestamp(start, tz=UTC)
    with store.unavailable("reading the ingest rate"):
        async with rt.pool.acquire() as conn:
            rows = await conn.fetch(
                """
                SELECT b.bucket, sum(b.n)::bigint AS n
                FROM products p CROSS JOIN LATERAL (
                    SELECT floor(extract(epoch FROM e.received_at) / $2)::bigint AS bucket,
                           count(*) AS n
                    FROM events e
                    WHERE e.product_id = p.product_id AND e.received_at >= $1
                    GROUP BY 1
                ) b
                WHERE $3::text IS NULL OR p.product_id = $3
                GROUP BY 1 ORDER BY 1
                """,
                since,
                float(step),
                product_id,
            )
    counts = {int(r["bucket"]) * step: int(r["n"]) for r in rows}
    points = [
        {"t": t, "events": counts.get(t, 0), "per_second": counts.get(t, 0) / step}
        for t in range(start, end, step)
    ]
    total = sum(p["events"] for p in points)
    return json_response(
        {
            "product_id": product_id,
            "window": window,
            "step": step,
            "points": points,
            "total": total,
            "average_per_second": total / window,
        }
    )


@router.post("/admin/api/stream-ticket/{product_id}")
async def stream_ticket(
    product_id: str, request: Request, authorization: Annotated[str | None, Header()] = None
) -> Response:
    require_admin(request, authorization)
    rt: Runtime = request.app.state.runtime
    if await rt.directory_get(product_id) is None:
        raise NotFoundError(f"unknown product {product_id!r}")
    return json_response(
        {"ticket": issue_ticket(rt, product_id), "expires_in": TICKET_SECONDS}
    )


@router.get("/admin/api/stream/{product_id}")
async def admin_stream(
    product_id: str,
    request: Request,
    ticket: Annotated[str | None, Query()] = None,
    since: Annotated[str | None, Query()] = None,
    replay: Annotated[str | None, Query()] = None,
    authorization: Annotated[str | None, Header()] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    """The same SSE stream as ``/stream/{product_id}``, for the admin page's live tail."""
    rt: Runtime = request.app.state.runtime
    rt.refuse_if_shutting_down()
    rt.limits.check_auth_block(request, AUTH_SCOPE)
    if not (ticket_ok(rt, product_id, ticket) or is_admin(request, authorization)):
        rt.limits.auth_failed(request, AUTH_SCOPE)
        raise UnauthorizedError("missing, expired or invalid stream ticket")
    if await rt.directory_get(product_id) is None:
        raise NotFoundError(f"unknown product {product_id!r}")
    return await stream.open_stream(
        rt, product_id, since=since, replay=replay, last_event_id=last_event_id
    )
