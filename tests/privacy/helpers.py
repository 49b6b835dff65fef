"""Small helpers for the privacy and operations tests (raw SSE reading, SQL)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx

from receiver.storage.store import asyncpg_dsn


async def read_stream(
    url: str,
    *,
    headers: dict[str, str] | None = None,
    frames: int,
    timeout: float = 15,
    started: asyncio.Event | None = None,
) -> bytes:
    """The raw bytes of an SSE stream until ``frames`` data frames have arrived."""
    buf = b""
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(None, connect=5)) as client,
        client.stream("GET", url, headers=headers or {}) as response,
    ):
        assert response.status_code == 200, (response.status_code, await response.aread())

        async def pump() -> None:
            nonlocal buf
            async for chunk in response.aiter_bytes():
                buf += chunk
                if started is not None and b"event: heartbeat" in buf:
                    started.set()
                if buf.count(b"\ndata: {") + buf.startswith(b"data: {") >= frames:
                    return

        await asyncio.wait_for(pump(), timeout)
    return buf


async def fetch(database_url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def dump_database(database_url: str) -> str:
    """Every row of every table and view in the public schema, as JSON text."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        names = await conn.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')"
        )
        out = []
        for (name,) in names:
            rows = await conn.fetch(f'SELECT row_to_json(t)::text FROM "{name}" t')  # noqa: S608
            out.extend(f"{name}: {r[0]}" for r in rows)
        return "\n".join(out)
    finally:
        await conn.close()
