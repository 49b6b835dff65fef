"""Postgres outage under load: stop the database, start it again, without restarting the receiver.

A dedicated Postgres cluster (not the session one other tests share) and a real
``receiver serve`` process on it. Posts keep flowing the whole time:

* while the database is down every answer is 503 with Retry-After (never a 200, never a 4xx
  that PostHog would drop), and ``/readyz`` is 503;
* once it is back, the same receiver process answers 200 again and ``/readyz`` 200;
* nothing that got a 200 is missing, and retrying the 503s (PostHog does) completes the set
  with no duplicates.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from receiver import devdb
from tests.conftest import register_product
from tests.faults.kit import (
    await_for,
    event_uuid,
    hog_event,
    new_product_id,
    post_load,
    show,
    stored_uuids,
)

CONCURRENCY = 8
OUTAGE_MIN_SECONDS = 2.0


@pytest.fixture
def own_pg() -> Iterator[devdb.PgServer]:
    """A throwaway cluster for this test alone (socket paths must stay short: /tmp)."""
    root = Path(tempfile.mkdtemp(prefix="rcvout", dir="/tmp"))
    srv = devdb.server(root / "data", ephemeral=True)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop(mode="immediate")
        devdb.remove(root)


async def _create_db(srv: devdb.PgServer, name: str) -> None:
    conn = await asyncpg.connect(srv.dsn("postgres"))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


@dataclass
class Answer:
    started: float
    ended: float
    status: int | None  # None: a transport error
    retry_after: str | None = None
    detail: str | None = None


@dataclass
class Timeline:
    answers: list[Answer] = field(default_factory=list)
    acked: dict[int, int | None] = field(default_factory=dict)
    ready: list[tuple[float, float, int | None]] = field(default_factory=list)  # started, ended, status


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_postgres_outage_gives_503_then_recovers_without_restart(
    own_pg: devdb.PgServer, spawn_receiver: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    await _create_db(own_pg, "receiver")
    url = own_pg.url("receiver")
    rp = spawn_receiver(RECEIVER_DATABASE_URL=url, RECEIVER_DB_TIMEOUT_SECONDS="2")
    product = register_product(rp.base_url, new_product_id("outage"))
    run = product.product_id
    tl = Timeline()
    stop = asyncio.Event()
    counter = iter(range(1_000_000))
    headers = {"x-posthog-secret": product.webhook_secret, "content-type": "application/json"}

    async def poster(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            i = next(counter)
            t0 = time.monotonic()
            try:
                r = await client.post(product.webhook_url, content=orjson.dumps(hog_event(run, i)),
                                      headers=headers)
            except httpx.HTTPError:
                tl.answers.append(Answer(t0, time.monotonic(), None))
                continue
            a = Answer(t0, time.monotonic(), r.status_code, r.headers.get("retry-after"))
            if r.status_code == 200:
                tl.acked[i] = r.json().get("position")
            else:
                a.detail = r.json().get("detail")
            tl.answers.append(a)

    async def readiness(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                r = await client.get(f"{rp.base_url}/readyz")
                tl.ready.append((t0, time.monotonic(), r.status_code))
            except httpx.HTTPError:
                tl.ready.append((t0, time.monotonic(), None))
            await asyncio.sleep(0.1)

    def answers_between(a: float, b: float) -> list[Answer]:
        return [x for x in tl.answers if x.started >= a and x.ended <= b]

    async with httpx.AsyncClient(timeout=httpx.Timeout(15.0)) as client:
        tasks = [asyncio.create_task(poster(client)) for _ in range(CONCURRENCY)]
        tasks.append(asyncio.create_task(readiness(client)))
        try:
            await await_for(lambda: _ready(len(tl.acked) >= 200), timeout=30, what="200 acks before")
            acked_before = len(tl.acked)

            t_stop = time.monotonic()
            await asyncio.to_thread(own_pg.stop)  # fast shutdown: sessions are terminated
            t_down = time.monotonic()
            # Hold the outage until the load and /readyz have both seen it for a while.
            await await_for(
                lambda: _ready(
                    time.monotonic() - t_down >= OUTAGE_MIN_SECONDS
                    and len(answers_between(t_down, time.monotonic())) >= 100
                    and sum(1 for t, _, s in tl.ready if t > t_down and s == 503) >= 3
                ),
                timeout=30, what="answers during the outage",
            )
            t_start = time.monotonic()
            await asyncio.to_thread(own_pg.start)
            t_up = time.monotonic()
            during = answers_between(t_down, t_start)
            # By start time, as for the posts: a probe sent before the stop may be answered
            # (200) after t_down.
            ready_during = [s for t, end, s in tl.ready if t > t_down and end < t_start]

            # Recovery, in the same receiver process: 200s again and /readyz 200.
            acked_at_up = len(tl.acked)
            await await_for(
                lambda: _ready(
                    len(tl.acked) >= acked_at_up + 200
                    and any(s == 200 for t, _, s in tl.ready if t > t_up)
                ),
                timeout=40, what="recovery after the restart",
            )
            t_recovered = min(
                (x.ended for x in tl.answers if x.started >= t_up and x.status == 200), default=None
            )
        finally:
            stop.set()
            await asyncio.gather(*tasks)

        assert rp.proc.poll() is None, "the receiver process must survive the outage"
        sent = len(tl.answers)
        unacked = [i for i in range(sent) if i not in tl.acked]
        # PostHog retries 503s: send the refused ones again now that the database is back.
        retry = await post_load(
            product.webhook_url, product.webhook_secret,
            [(i, hog_event(run, i)) for i in unacked], concurrency=CONCURRENCY,
        )

    statuses: dict[str, int] = {}
    for a in tl.answers:
        key = str(a.status) if a.status is not None else "transport-error"
        statuses[key] = statuses.get(key, 0) + 1
    during_statuses: dict[str, int] = {}
    for a in during:
        key = str(a.status) if a.status is not None else "transport-error"
        during_statuses[key] = during_statuses.get(key, 0) + 1
    stored = await stored_uuids(url, product.product_id)
    acked_uuids = {event_uuid(run, i) for i in tl.acked}
    missing = acked_uuids - stored.uuids
    show(
        capsys, "faults/pg-outage",
        sent=sent, acked=len(tl.acked), acked_before_outage=acked_before, statuses=statuses,
        during_outage=during_statuses, readyz_during=sorted(set(ready_during), key=str),
        outage_seconds=f"{t_start - t_down:.1f}", stop_seconds=f"{t_down - t_stop:.1f}",
        recovered_after_seconds=f"{(t_recovered or t_up) - t_up:.2f}",
        retried=len(unacked), retry_statuses=retry.statuses, stored=stored.rows,
        missing=len(missing), duplicated=stored.duplicated,
    )
    # During the outage: 503 with Retry-After, never a 200, never a 4xx (nor a dropped connection).
    assert during and all(a.status == 503 for a in during), during_statuses
    assert all(a.retry_after == "1" for a in during)
    # No 4xx and no other 5xx anywhere, transitions included.
    assert set(statuses) <= {"200", "503"}, statuses
    assert ready_during and set(ready_during) == {503}
    assert not missing and stored.duplicated == 0 and stored.positions_gap_free
    assert retry.statuses == {200: len(unacked)}
    assert stored.rows == len(tl.acked) + len(unacked) == sent


async def _ready(value: bool) -> bool:
    return value
