"""The admin page's push data: ``GET /admin/api/push`` (every endpoint: lag, state, failures,
dead letters) and ``GET /admin/api/push/{product_id}`` (one endpoint with its dead letters and
latest attempts). Read-only: redelivery and skipping are ``receiver push retry|skip``.

Authentication is the admin API's (``receiver.ops.admin.require_admin``). URLs are shown
redacted (no credentials, no query string); secrets are never read.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from starlette.responses import Response

from receiver.delivery.push import outbox
from receiver.ops.admin import require_admin
from receiver.responses import json_response
from receiver.runtime import Runtime
from receiver.storage import store

router = APIRouter(tags=["admin"], include_in_schema=False)


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


@router.get("/admin/api/push")
async def push_endpoints(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Response:
    require_admin(request, authorization)
    rt: Runtime = request.app.state.runtime
    with store.unavailable("reading push status"):
        async with rt.pool.acquire() as conn:
            rows = await outbox.status(conn)
    return json_response({
        "endpoints": [_jsonable(r) for r in rows],
        "generated_at": datetime.now(UTC).isoformat(),
    })


@router.get("/admin/api/push/{product_id}")
async def push_endpoint(
    product_id: str, request: Request, authorization: Annotated[str | None, Header()] = None
) -> Response:
    require_admin(request, authorization)
    rt: Runtime = request.app.state.runtime
    with store.unavailable("reading push status"):
        async with rt.pool.acquire() as conn:
            row = (await outbox.status(conn, product_id))[0]
            dead = await outbox.dead_letters(conn, product_id, limit=100)
            attempts = await outbox.recent_attempts(conn, product_id, limit=50)
    return json_response({
        "endpoint": _jsonable(row),
        "dead_letters": [_jsonable(d) for d in dead],
        "attempts": [_jsonable(a) for a in attempts],
    })
