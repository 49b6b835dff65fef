"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from receiver import onboarding, responses, runtime
from receiver.delivery import links, mcp, pull, stream
from receiver.errors import ReceiverError
from receiver.ingest import capture, ingest, webhook
from receiver.ops import admin, health, heap, push_admin
from receiver.ops.connections import ConcurrencyLimit
from receiver.ops.logging import RequestContextMiddleware
from receiver.settings import Settings
from receiver.storage.migrate import head_revision


def create_app(settings: Settings, *, manage_gc: bool = False) -> FastAPI:
    """``manage_gc``: run the process-wide GC policy (receiver.ops.heap); ``receiver serve`` only."""
    mcp_server = mcp.build(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = await runtime.start(settings, head_revision())
        app.state.runtime = rt
        restore_signals = runtime.chain_exit_signals(rt)
        gc_policy = heap.start(settings.gc_rescan_seconds) if manage_gc else None
        try:
            async with mcp.running(mcp_server):
                yield
        finally:
            restore_signals()
            await heap.stop(gc_policy)
            await runtime.stop(rt)

    app = FastAPI(
        title="autoplay receiver",
        summary="PostHog destination → Postgres event log → SSE stream for autoplay-sdk clients",
        version="0.1.0",
        lifespan=lifespan,
        # PostHog does not follow redirects and drops the event silently: never send a 307.
        redirect_slashes=False,
    )
    app.add_exception_handler(ReceiverError, responses.on_receiver_error)
    app.add_exception_handler(RequestValidationError, responses.on_validation_error)
    app.add_exception_handler(StarletteHTTPException, responses.on_http_error)
    app.add_exception_handler(Exception, responses.on_unexpected)
    for module in (webhook, ingest, capture, stream, pull, links, onboarding, health):
        app.include_router(module.router)
    # POST only: stateless, with JSON answers, there is no session to DELETE and nothing to push
    # on a standing GET stream, which would only hold a connection per client (405, as the
    # specification allows; clients carry on without it).
    app.router.routes.append(Route(mcp.PATH, mcp.Endpoint(mcp_server), methods=["POST"], name="mcp"))
    webhook.mount(app)
    # Requests in progress, bounded (503 past it); inside CORS so capture's 503 carries it.
    app.add_middleware(ConcurrencyLimit, limit=settings.max_concurrent_requests)
    ingest.mount(app)
    pull.mount(app)
    # CORS for the browser-facing capture/flags/config routes only (see receiver.ingest.capture).
    app.add_middleware(capture.CaptureCORS)
    app.add_middleware(links.LinkCORS)  # POST /sessions/link only
    app.include_router(admin.router)
    app.include_router(push_admin.router)
    # Outermost: request ids, access log and ingest metrics see every request as answered.
    app.add_middleware(RequestContextMiddleware)
    return app
