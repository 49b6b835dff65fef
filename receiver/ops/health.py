"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from receiver import apidoc
from receiver.responses import json_response
from receiver.runtime import Runtime
from receiver.storage import topology

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
    """Ready when the database answers, is the primary and its schema is at the migration head.

    ``database`` tells what the receiver's database looks like: primary or standby, what a
    commit waits for, and each standby's sync state and lag (receiver.storage.topology).
    Readiness does not depend on the standbys: a primary alone still takes writes.
    """
    rt: Runtime = request.app.state.runtime
    if rt.shutting_down:
        return json_response({"status": "shutting_down"}, 503)
    try:
        async with rt.pool.acquire(timeout=2) as conn:
            version = await conn.fetchval("SELECT version_num FROM alembic_version", timeout=2)
            database = await topology.describe(conn, timeout=2)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        return json_response({"status": "unavailable", "detail": type(exc).__name__}, 503)
    rt.metrics.observe_topology(database)
    database.pop("lsn", None)
    for s in database["standbys"]:
        for key in ("client_addr", "flush_lsn", "replay_lsn"):
            s.pop(key, None)  # /readyz is unauthenticated: no addresses, no positions
    if database["role"] != "primary":
        return json_response(
            {"status": "not_primary", "detail": "the database is a standby", "database": database}, 503
        )
    if rt.migration_head and version != rt.migration_head:
        return json_response(
            {"status": "migrations_pending", "detail": f"at {version}, head is {rt.migration_head}"},
            503,
        )
    return json_response({"status": "ready", "migration": version, "database": database})


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    rt.metrics.observe_pool(rt.pool.get_size(), rt.pool.get_idle_size())
    rt.metrics.observe_confirmations(rt.hub.confirmer.barriers, rt.hub.confirmer.refused)
    try:
        async with rt.pool.acquire(timeout=2) as conn:
            rt.metrics.observe_topology(await topology.describe(conn, timeout=2))
    except Exception:  # noqa: BLE001 - the database being away is what the gauges then say
        rt.metrics.observe_topology(None)
    return Response(rt.metrics.render(), media_type="text/plain; version=0.0.4")
