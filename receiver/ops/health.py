"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from receiver import apidoc
from receiver.responses import json_response
from receiver.runtime import Runtime

router = APIRouter(tags=["health"])


@router.get("/healthz", responses={200: {"model": apidoc.Health, "description": "Alive."}})
async def healthz() -> Response:
    """The process is alive (says nothing about the database)."""
    return json_response({"status": "ok"})


@router.get(
    "/readyz",
    responses={
        200: {"model": apidoc.Readiness, "description": "Ready."},
        503: {"model": apidoc.Readiness, "description": "Not ready."},
    },
)
async def readyz(request: Request) -> Response:
    """Ready when the database answers and its schema is at the migration head."""
    rt: Runtime = request.app.state.runtime
    if rt.shutting_down:
        return json_response({"status": "shutting_down"}, 503)
    try:
        async with rt.pool.acquire(timeout=2) as conn:
            version = await conn.fetchval("SELECT version_num FROM alembic_version")
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        return json_response({"status": "unavailable", "detail": type(exc).__name__}, 503)
    if rt.migration_head and version != rt.migration_head:
        return json_response(
            {"status": "migrations_pending", "detail": f"at {version}, head is {rt.migration_head}"},
            503,
        )
    return json_response({"status": "ready", "migration": version})


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    rt.metrics.observe_pool(rt.pool.get_size(), rt.pool.get_idle_size())
    return Response(rt.metrics.render(), media_type="text/plain; version=0.0.4")
