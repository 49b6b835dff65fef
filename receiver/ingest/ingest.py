"""``POST /ingest/{product_id}``: the ``ingest_url`` that autoplay-sdk 0.13.0's onboarding hands out.

The same pipeline as ``/webhook`` (:func:`receiver.ingest.webhook.receive`: size cap → product →
secret → content type → JSON → normalize → one commit for the whole request, 200 only after it;
dedup, limits, privacy policy, 503 when the fault is ours), with two differences:

* the secret comes as ``x-posthog-secret`` (PostHog's Hog destination) or as
  ``Authorization: Bearer <secret>`` (Amplitude's Event Streaming destination). It is the
  product's webhook secret, whichever way the product was registered (0.13.0 calls it
  ``ingest_secret``): both routes accept the same secrets;
* Amplitude bodies ``{"events": [...]}`` are understood too (:mod:`receiver.ingest.amplitude`).

``POST /ingest/amplitude/{product_id}`` is the hosted connector's older Amplitude path: the same
pipeline and mapping, with the secret as ``Authorization: Bearer`` only, as Amplitude sends it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from receiver import apidoc
from receiver.ingest.webhook import FastRoute, receive
from receiver.security import bearer_token

router = APIRouter(tags=["ingest"])


@router.post(
    "/ingest/{product_id}",
    responses=apidoc.ingest_responses(
        bad_body="Body is not a JSON object, a field is invalid, or an element of a batch is (the "
        "detail names it: events[3]: ...; nothing of the request is stored).",
        unauthorized="Missing or wrong x-posthog-secret / Authorization: Bearer secret.",
    ),
    # As for the webhook, parameters are documented rather than declared (hot path).
    openapi_extra={**apidoc.INGEST_BODY, **apidoc.INGEST_PARAMETERS},
)
async def ingest(request: Request) -> Response:
    secret = request.headers.get("x-posthog-secret") or bearer_token(
        request.headers.get("authorization")
    )
    return await receive(
        request,
        secret=secret,
        auth_error="missing or invalid ingest secret (x-posthog-secret or Authorization: Bearer)",
        amplitude=True,
    )


@router.post(
    "/ingest/amplitude/{product_id}",
    responses=apidoc.ingest_responses(
        bad_body="Body is not a JSON object, or an element of events is invalid (the detail names "
        "it: events[3]: ...; nothing of the request is stored).",
        unauthorized="Missing or wrong Authorization: Bearer secret.",
    ),
    openapi_extra={**apidoc.INGEST_BODY, **apidoc.AMPLITUDE_PARAMETERS},
)
async def ingest_amplitude(request: Request) -> Response:
    """The legacy Amplitude path: Bearer only, Amplitude bodies (and the others ``/ingest`` takes)."""
    return await receive(
        request,
        secret=bearer_token(request.headers.get("authorization")),
        auth_error="missing or invalid Authorization: Bearer ingest secret",
        amplitude=True,
    )


def mount(app: Any) -> None:
    """Serve both routes on the fast route too (see :class:`FastRoute`)."""
    app.router.routes.insert(0, FastRoute("/ingest/{product_id}", ingest, "ingest_fast"))
    app.router.routes.insert(
        0, FastRoute("/ingest/amplitude/{product_id}", ingest_amplitude, "ingest_amplitude_fast")
    )
