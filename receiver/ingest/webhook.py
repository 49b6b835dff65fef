"""``POST /webhook/{product_id}``: the PostHog destination's way in.

Order of checks: size (413) → product (404) → secret (401) → content type (415) → rate (429)
→ JSON values counted (413) → JSON (400) → events per request and per-event budget (413/400)
→ normalize (400) → privacy policy → durable commit (200, or 503 when the fault is ours).
Parsing, normalizing and scrubbing a body over ``RECEIVER_OFFLOAD_BYTES`` run off the event loop
(receiver.ingest.offload). The answer is 200 only after the request's transaction has committed;
duplicates (PostHog delivers at least once) also get 200, with no second row and no second
frame.

A body may also be a PostHog batch ``{"batch": [...]}`` (:mod:`receiver.ingest.shapes`): every
element is its own event, and the whole request commits in one transaction or not at all.
:func:`receive` is the pipeline; ``POST /ingest/{product_id}`` (:mod:`receiver.ingest.ingest`)
runs it too, with its own secret header and Amplitude bodies.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

from receiver import apidoc
from receiver.errors import NotFoundError, UnauthorizedError
from receiver.ingest import privacy, shapes
from receiver.ingest.bodies import parse_json, read_limited, require_json_content_type
from receiver.ingest.budget import Budget, prescan
from receiver.responses import json_response
from receiver.runtime import Runtime
from receiver.storage.products import ProductAuth
from receiver.storage.store import Appended, Pending

router = APIRouter(tags=["ingest"])


@router.post(
    "/webhook/{product_id}",
    responses=apidoc.ingest_responses(
        bad_body="Body is not a JSON object, a field is invalid, or an element of a batch is "
        "(the detail names it: batch[3]: ...; nothing of the request is stored).",
        unauthorized="Missing or wrong x-posthog-secret.",
    ),
    # The path and header parameters are documented here rather than declared in the
    # signature: FastAPI's per-request parameter solving (dependency models, validation of
    # two plain strings) was a measurable share of the hot path's CPU. Same document.
    openapi_extra={**apidoc.WEBHOOK_BODY, **apidoc.WEBHOOK_PARAMETERS},
)
async def webhook(request: Request) -> Response:
    return await receive(
        request,
        secret=request.headers.get("x-posthog-secret"),
        auth_error="missing or invalid x-posthog-secret header",
        amplitude=False,
    )


async def receive(
    request: Request, *, secret: str | None, auth_error: str, amplitude: bool
) -> Response:
    """The ingest pipeline of one request, whatever the route: see the module docstring."""
    product_id: str = request.path_params["product_id"]
    rt: Runtime = request.app.state.runtime
    received_at = rt.writer.clock.now()
    body = await read_limited(request, rt.settings.max_body_bytes, rt.settings.body_timeout_seconds)
    product = await rt.find_product(request, product_id)
    if product is None:
        raise NotFoundError(f"unknown product {product_id!r}")
    rt.limits.check_auth_block(request, product_id)
    if not product.webhook_ok(secret):
        rt.limits.auth_failed(request, product_id)
        raise UnauthorizedError(auth_error)
    require_json_content_type(request.headers.get("content-type"))
    # One event and the bytes before parsing, so a flood is refused before it costs CPU; the
    # rest of a batch once its size is known.
    rt.limits.check_ingest(product_id, 1, len(body))
    pending = await rt.offload.run(
        len(body), prepare_events, body, product, received_at, rt.budget, amplitude,
        rt.settings.hash_key_bytes(),
    )
    if len(pending) > 1:
        rt.limits.check_ingest(product_id, len(pending) - 1)
    results = await rt.writer.submit(pending)
    return json_response(ack(results))


def prepare_events(
    body: bytes,
    product: ProductAuth,
    received_at: datetime,
    budget: Budget,
    amplitude: bool,
    hash_key: bytes | None,
) -> list[Pending]:
    """Parse, normalize and scrub a request's events: CPU only (maybe on the offload thread)."""
    prescan(body, budget)
    events = shapes.events_of(
        parse_json(body), received_at=received_at, amplitude=amplitude, budget=budget
    )
    policy = product.policy
    return [
        Pending(product.product_id, received_at, privacy.apply(policy, e, hash_key), policy)
        for e in events
    ]


def ack(results: list[Appended]) -> dict[str, Any]:
    """The 200 body: one event's ack as ever; for several, how many were new."""
    positions = [r.position for r in results if r.position is not None]
    out: dict[str, Any] = {"status": "ok", "duplicate": not positions}
    if positions:
        out["position"] = positions[-1]
    if len(results) > 1:
        out["stored"] = len(positions)
        out["duplicates"] = len(results) - len(positions)
    return out


class FastRoute(Route):
    """A route served by Starlette's plain request/response wrapper.

    The handler takes only the request, so FastAPI's per-request machinery around it (two
    AsyncExitStacks, dependency solving that still parses query string, headers and cookies,
    response serialization checks) is pure overhead on the hottest route. :func:`mount` puts
    this route first; the ``APIRoute`` above stays registered for the OpenAPI document and
    is never reached for this path. Errors go through the same application exception
    handlers (Starlette's wrapper looks them up in the scope), so clients see no difference.
    """

    def __init__(
        self,
        path: str,
        endpoint: Callable[[Request], Awaitable[Response]],
        name: str,
        *,
        methods: list[str] | None = None,
        tags: list[Any] | None = None,
    ) -> None:
        super().__init__(path, endpoint, methods=methods or ["POST"], name=name,
                         include_in_schema=False)
        # The request middleware counts ingest metrics by route tags.
        self.tags = router.tags if tags is None else tags

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match != Match.NONE:
            child_scope["route"] = self  # as APIRoute does: metrics and the access log read it
        return match, child_scope


def mount(app: Any) -> None:
    """Serve the webhook through :class:`FastRoute`, ahead of every other route."""
    app.router.routes.insert(0, FastRoute("/webhook/{product_id}", webhook, "webhook_fast"))
