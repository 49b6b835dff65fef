"""Per-product ingest rate limit: 429 with Retry-After (which PostHog retries), never another
4xx; other products unaffected; the defaults never trip for legitimate bursts.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import register_product
from tests.faults.kit import (
    await_for,
    count_events,
    hog_event,
    new_product_id,
    nodelay,
    post_load,
    show,
)


async def burst(ac: httpx.AsyncClient, p: Any, start: int, n: int) -> list[httpx.Response]:
    return await asyncio.gather(*(
        ac.post(p.webhook_url, content=orjson.dumps(hog_event(p.product_id, start + i)),
                headers={"x-posthog-secret": p.webhook_secret, "content-type": "application/json"})
        for i in range(n)
    ))


async def test_ingest_rate_limit_answers_429_with_retry_after(
    receiver_factory: Callable[..., Any], database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    live = nodelay(receiver_factory(ingest_rate_limit=5, ingest_burst=5))
    a = register_product(live.base_url, new_product_id("rla"))
    b = register_product(live.base_url, new_product_id("rlb"))
    async with httpx.AsyncClient(timeout=10) as ac:
        # Sequentially: the first five are the burst; the sixth finds the bucket empty unless
        # the posts were slow enough for a token to refill (5/s: one per 200 ms), so allow
        # exactly the refilled tokens and no more.
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        seq: list[httpx.Response] = []
        while len(seq) < 30 and (not seq or seq[-1].status_code == 200):
            seq.append((await burst(ac, a, len(seq), 1))[0])
        elapsed = loop.time() - t0
        statuses = [r.status_code for r in seq]
        assert statuses[:5] == [200] * 5
        assert statuses[-1] == 429, statuses
        assert len(statuses) - 1 <= 5 + int(elapsed * 5) + 1, (statuses, elapsed)
        limited = seq[-1]
        retry_after = int(limited.headers["retry-after"])
        assert retry_after >= 1 and limited.json()["detail"]
        # A concurrent burst while empty: only 429s (or a 200 for a refilled token), no other 4xx.
        more = await burst(ac, a, 100, 20)
        more_statuses = sorted({r.status_code for r in more})
        assert set(more_statuses) <= {200, 429}, more_statuses
        assert all("retry-after" in r.headers for r in more if r.status_code == 429)
        # Another product has its own bucket.
        other = [r.status_code for r in await burst(ac, b, 0, 5)]
        assert other == [200] * 5
        # After Retry-After, the product is served again (poll, bounded).
        resumed = await await_for(
            lambda: _ok(ac, a), timeout=retry_after + 5, interval=0.2, what="bucket to refill"
        )
    stored_a = await asyncio.to_thread(count_events, database_url, a.product_id)
    accepted_a = (len(statuses) - 1) + sum(1 for r in more if r.status_code == 200) + 1
    assert stored_a == accepted_a  # every 429 stored nothing
    show(
        capsys, "security/ingest-rate", rate=5, burst=5, sequential=statuses, retry_after=retry_after,
        concurrent_burst_of_20=dict(_count(more)), other_product=other, resumed=resumed,
        stored=stored_a,
    )


_probe = itertools.count(1000)


async def _ok(ac: httpx.AsyncClient, p: Any) -> int | None:
    r = (await burst(ac, p, next(_probe), 1))[0]
    assert r.status_code in (200, 429), r.status_code
    return r.status_code if r.status_code == 200 else None


def _count(rs: list[httpx.Response]) -> dict[int, int]:
    out: dict[int, int] = {}
    for r in rs:
        out[r.status_code] = out.get(r.status_code, 0) + 1
    return out


@pytest.mark.slow
async def test_default_limits_never_trip_on_a_burst(
    spawn_receiver: Callable[..., Any], database_url: str, capsys: pytest.CaptureFixture[str],
) -> None:
    """A real ``receiver serve`` with default settings takes a 2000-post burst: all 200."""
    rp = spawn_receiver()
    p = register_product(rp.base_url, new_product_id("burst"))
    n = 2000
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    result = await post_load(
        p.webhook_url, p.webhook_secret, [(i, hog_event(p.product_id, i)) for i in range(n)],
        concurrency=32, timeout=30,
    )
    seconds = loop.time() - t0
    stored = await asyncio.to_thread(count_events, database_url, p.product_id)
    show(capsys, "security/default-limits", sent=n, statuses=result.statuses, errors=result.errors,
         stored=stored, seconds=f"{seconds:.1f}", rate_per_s=int(n / seconds))
    assert result.statuses == {200: n} and not result.errors
    assert stored == n
