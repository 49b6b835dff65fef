"""``POST /webhook/{product_id}``: the PostHog destination's way in.

Order of checks: size (413) → product (404) → secret (401) → content type (415) → rate (429)
→ JSON values counted (413) → JSON (400) → per-event budget (413/400) → normalize (400) →
privacy policy → durable commit (200, or 503 when the fault is ours). Parsing, normalizing and
scrubbing a body over ``RECEIVER_OFFLOAD_BYTES`` run off the event loop
(receiver.ingest.offload). The answer is 200 only after the event's transaction has committed;
duplicates (PostHog delivers at least once) also get 200, with no second row and no second
frame.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

from receiver import apidoc
from receiver.errors import NotFoundError, UnauthorizedError
from receiver.ingest import normalize, privacy
from receiver.ingest.bodies import parse_json, read_limited, require_json_content_type
from receiver.ingest.budget import Budget, prescan
from receiver.responses import json_response
from receiver.runtime import Runtime
from receiver.storage.products import ProductAuth
from receiver.storage.store import Pending

router = APIRouter(tags=["ingest"])


@router.post(
    "/webhook/{product_id}",
    responses={
        200: {
            "model": apidoc.WebhookAck,
            "description": "Committed (or a duplicate of an event already committed).",
        },
        400: apidoc.error("Body is not a JSON object or a field is invalid."),
        401: apidoc.error("Missing or wrong x-posthog-secret."),
        404: apidoc.error("Unknown product."),
        408: apidoc.error("Body not received within RECEIVER_BODY_TIMEOUT_SECONDS."),
        413: apidoc.error("Body over RECEIVER_MAX_BODY_BYTES, or over a JSON budget."),
        415: apidoc.error("Content type is not JSON."),
        429: apidoc.error("Rate limited; retry after Retry-After seconds."),
        503: apidoc.error("Database unavailable or shutting down; retry."),
    },
    # The path and header parameters are documented here rather than declared in the
    # signature: FastAPI's per-request parameter solving (dependency models, validation of
    # two plain strings) was a measurable share of the hot path's CPU. Same document.
    openapi_extra={**apidoc.WEBHOOK_BODY, **apidoc.WEBHOOK_PARAMETERS},
)
async def webhook(request: Request) -> Response:
    product_id: str = request.path_params["product_id"]
    x_posthog_secret = request.headers.get("x-posthog-secret")
    rt: Runtime = request.app.state.runtime
    received_at = rt.writer.clock.now()
    body = await read_limited(request, rt.settings.max_body_bytes, rt.settings.body_timeout_seconds)
    product = await rt.find_product(request, product_id)
    if product is None:
        raise NotFoundError(f"unknown product {product_id!r}")
    rt.limits.check_auth_block(request, product_id)
    if not product.webhook_ok(x_posthog_secret):
        rt.limits.auth_failed(request, product_id)
        raise UnauthorizedError("missing or invalid x-posthog-secret header")
    require_json_content_type(request.headers.get("content-type"))
    rt.limits.check_ingest(product_id, 1, len(body))
    pending = await rt.offload.run(
        len(body), prepare_event, body, product, received_at, rt.budget, rt.settings.hash_key_bytes()
    )
    [result] = await rt.writer.submit([pending])
    out: dict[str, Any] = {"status": "ok", "duplicate": result.position is None}
    if result.position is not None:
        out["position"] = result.position
    return json_response(out)


def prepare_event(
    body: bytes, product: ProductAuth, received_at: datetime, budget: Budget, hash_key: bytes | None
) -> Pending:
    """Parse, normalize and scrub one webhook body: CPU only (maybe on the offload thread)."""
    prescan(body, budget)
    event = normalize.from_webhook(parse_json(body), received_at=received_at, budget=budget)
    policy = product.policy
    return Pending(product.product_id, received_at, privacy.apply(policy, event, hash_key), policy)


class WebhookRoute(Route):
    """``POST /webhook/{product_id}`` served by Starlette's plain request/response wrapper.

    The handler takes only the request, so FastAPI's per-request machinery around it (two
    AsyncExitStacks, dependency solving that still parses query string, headers and cookies,
    response serialization checks) is pure overhead on the hottest route. :func:`mount` puts
    this route first; the ``APIRoute`` above stays registered for the OpenAPI document and
    is never reached for this path. Errors go through the same application exception
    handlers (Starlette's wrapper looks them up in the scope), so clients see no difference.
    """

    tags = router.tags  # the request middleware counts ingest metrics by route tags

    def __init__(self) -> None:
        super().__init__("/webhook/{product_id}", webhook, methods=["POST"], name="webhook_fast",
                         include_in_schema=False)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match != Match.NONE:
            child_scope["route"] = self  # as APIRoute does: metrics and the access log read it
        return match, child_scope


def mount(app: Any) -> None:
    """Serve the webhook through :class:`WebhookRoute`, ahead of every other route."""
    app.router.routes.insert(0, WebhookRoute())
