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

from receiver.storage import devdb
from tests.conftest import register_product
from tests.faults.kit import (
    ResumingSubscriber,
    await_for,
    cancel,
    event_uuid,
    gaps_and_dups,
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


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_stream_catching_up_when_postgres_goes_away_ends_cleanly_and_resumes(
    own_pg: devdb.PgServer, spawn_receiver: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """A subscriber behind the in-memory ring reads from Postgres; the database disappears.

    The stream must end cleanly (a complete chunked response, not a hang or a torn frame), the
    receiver must log why, live subscribers must stay connected, and the subscriber must resume
    by position once the database is back: every event exactly once, in order.
    """
    await _create_db(own_pg, "receiver")
    url = own_pg.url("receiver")
    # A 16-frame ring and 10-event pages: resuming from position 100 of 300 needs the database.
    rp = spawn_receiver(
        RECEIVER_DATABASE_URL=url, RECEIVER_DB_TIMEOUT_SECONDS="2",
        RECEIVER_STREAM_RING_SIZE="16", RECEIVER_STREAM_PAGE_SIZE="10",
        RECEIVER_HEARTBEAT_SECONDS="0.5",
    )
    product = register_product(rp.base_url, new_product_id("catchup"))
    run = product.product_id
    first = await post_load(
        product.webhook_url, product.webhook_secret,
        [(i, hog_event(run, i)) for i in range(300)], concurrency=4,
    )
    assert first.statuses == {200: 300}

    live = ResumingSubscriber(product.stream_url, product.stream_key, mode="header", last_id=300)
    behind = ResumingSubscriber(product.stream_url, product.stream_key, mode="since", last_id=100)
    stop = asyncio.Event()
    live_task = asyncio.create_task(live.run(stop))
    behind_task: asyncio.Task[None] | None = None
    try:
        await await_for(lambda: _ready(live.connects == 1), timeout=10, what="live subscriber")
        await asyncio.to_thread(own_pg.stop)
        # The subscriber 200 positions behind connects while the database is away: its stream
        # starts (200, heartbeat), finds the next page unreadable, and ends; it retries.
        behind_task = asyncio.create_task(behind.run(stop, max_backoff=0.2))
        await await_for(
            lambda: _ready(behind.clean_ends + sum(behind.failures.values()) >= 3),
            timeout=30, what="catch-up attempts during the outage",
        )
        ends_during, failures_during = behind.clean_ends, dict(behind.failures)
        positions_during = list(behind.positions)
        await asyncio.to_thread(own_pg.start)
        await await_for(lambda: _ready(behind.last_id >= 300), timeout=40, what="catch-up after")
        # New events reach both, the live one on the connection it has had all along.
        more = await post_load(
            product.webhook_url, product.webhook_secret,
            [(i, hog_event(run, i)) for i in range(300, 350)], concurrency=4,
        )
        assert more.statuses == {200: 50}
        await await_for(
            lambda: _ready(live.last_id >= 350 and behind.last_id >= 350), timeout=20,
            what="events after the outage on both streams",
        )
    finally:
        stop.set()
        await cancel(live_task)
        if behind_task is not None:
            await cancel(behind_task)

    missing, duplicated = gaps_and_dups(behind.positions, 350)
    log_text = rp.log()
    show(
        capsys, "faults/stream-catch-up-outage",
        catch_up_attempts_during_outage=ends_during + sum(failures_during.values()),
        clean_ends_during_outage=ends_during, failed_connects_during_outage=failures_during,
        frames_during_outage=len(positions_during), behind_connects=behind.connects,
        behind_received=len(behind.positions), missing=len(missing) - 100, duplicated=duplicated,
        live_connects=live.connects, live_received=len(live.positions),
    )
    assert rp.proc.poll() is None
    # Each attempt during the outage either ended cleanly after the 200 or was refused with a
    # 503 (once the product lookup cache expired): never a torn response or another status.
    assert ends_during >= 1, (ends_during, failures_during)
    assert set(failures_during) <= {"status 503"}, failures_during
    assert positions_during == []
    assert "ending stream of " + product.product_id in log_text
    # Resumed by position: 101..350 exactly once, in order; nothing before the resume point.
    assert missing == list(range(1, 101))
    assert duplicated == 0
    assert behind.positions == list(range(101, 351))
    # The live subscriber never dropped.
    assert live.connects == 1 and live.positions == list(range(301, 351))
