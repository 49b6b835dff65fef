"""`receiver erase` while a receiver is streaming: erased events are not replayed from the
frames the receiver caches in memory."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from receiver.storage import retention
from tests.sql.seed import add, connect


def test_erase_drops_cached_frames_of_a_live_receiver(
    receiver: Any, make_product: Callable[..., Any]
) -> None:
    product = make_product()
    pid = product.product_id
    url = receiver.settings.database_url_str()
    headers = {"Authorization": f"Bearer {product.stream_key}"}

    def ring() -> list[int]:
        feed = receiver.runtime.hub.feeds.get(pid)
        return [pos for pos, _ in list(feed.ring)] if feed else []

    async def wait_for(cond: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 10
        while not cond():
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.05)

    async def first_id(client: httpx.AsyncClient, query: str) -> int:
        async with client.stream("GET", f"{product.stream_url}?{query}", headers=headers) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if line.startswith("id: "):
                    return int(line[4:])
        raise AssertionError("stream ended")

    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            async with client.stream("GET", product.stream_url, headers=headers) as live:
                assert live.status_code == 200
                await wait_for(lambda: pid in receiver.runtime.hub.feeds, "no feed")
                conn = await connect(url)
                try:
                    now = datetime.now(UTC)
                    for user, session in (("alice", "sa"), ("alice", "sa"), ("bob", "sb")):
                        await add(conn, pid, now, user=user, session=session, kind="click", text="Go")
                    await wait_for(lambda: ring() == [1, 2, 3], f"ring {ring()}")
                    assert await first_id(client, "since=0") == 1  # served from the ring
                    counts = await retention.erase(conn, "alice")
                    assert counts == {"events": 2, "session_events": 0}
                finally:
                    await conn.close()
                await wait_for(lambda: ring() == [], f"ring not cleared: {ring()}")
                # Resuming from before the erase now reads the database: alice is gone.
                assert await first_id(client, "since=0") == 3

    asyncio.run(scenario())
