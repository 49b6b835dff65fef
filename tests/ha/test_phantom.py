"""No phantom events: a commit whose wait for the synchronous standby is cancelled is visible
on the primary but missing on the standby. It must never get a 200 and never reach a
subscriber; after the standby is promoted, its position belongs to another event, and every
subscriber sees that one.

A naive receiver fails this test three ways: it answers 200 for the cancelled commit (which
the failover then loses), its own subscribers get the event at position 6 from the writer,
and the other receiver streams it as soon as the NOTIFY arrives; after the failover the
subscribers hold a position 6 that means another event (and see the retried event twice).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest
from autoplay_sdk import ActionsPayload, AsyncConnectorClient

from receiver.settings import Settings
from tests.conftest import LiveReceiver, register_product, start_live_receiver
from tests.faults.kit import ResumingSubscriber, await_for, cancel, hog_event, show
from tests.ha.replicas import SyncPair


@pytest.fixture
def receivers(pair: SyncPair) -> Iterator[list[LiveReceiver]]:
    started: list[LiveReceiver] = []
    try:
        # A: the writer whose commit gets stuck; its requests may wait long enough for the test
        # to cancel the wait itself. B: another receiver on the same database, quick to give up.
        for timeout in (15.0, 1.0):
            started.append(start_live_receiver(Settings(
                database_url=pair.uri, port=0, db_timeout_seconds=timeout, poll_seconds=0.5,
            )))
        yield started
    finally:
        for live in reversed(started):
            live.stop()


async def _true(value: object) -> bool:
    return bool(value)


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_cancelled_sync_commit_is_never_acknowledged_nor_streamed(
    pair: SyncPair, receivers: list[LiveReceiver], capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = receivers
    product = register_product(a.base_url, "phantom")
    run = product.product_id
    headers = {"x-posthog-secret": product.webhook_secret, "content-type": "application/json"}

    async with httpx.AsyncClient(timeout=30) as http:
        async def post(url_base: str, i: int) -> httpx.Response:
            return await http.post(
                f"{url_base}/webhook/{run}", content=orjson.dumps(hog_event(run, i)), headers=headers
            )

        for i in range(5):
            assert (await post(a.base_url, i)).status_code == 200

        subs = [
            ResumingSubscriber(f"{a.base_url}/stream/{run}", product.stream_key, mode="header"),
            ResumingSubscriber(f"{b.base_url}/stream/{run}", product.stream_key, mode="since"),
        ]
        stock_seen: list[str] = []

        async def on_actions(payload: ActionsPayload) -> None:
            stock_seen.append(str(payload.user_id))

        stock_connected = asyncio.Event()
        stock = AsyncConnectorClient(
            url=f"{b.base_url}/stream/{run}", token=product.stream_key, on_connect=stock_connected.set
        )
        stock.on_actions(on_actions)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(s.run(stop)) for s in subs]
        stock_task = stock.run_in_background()
        try:
            await asyncio.wait_for(stock_connected.wait(), 15)
            await await_for(lambda: _true(all(s.last_id >= 5 for s in subs)), what="positions 1-5")

            # The standby goes away; the next commit waits for it, and we cancel that wait
            # (as a statement timeout or pg_cancel_backend would).
            pair.stop_standby()
            stuck = asyncio.create_task(post(a.base_url, 100))
            waiting = await await_for(
                lambda: pair.fetch(
                    pair.primary, "SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
                ),
                what="a commit waiting for the standby",
            )
            await pair.fetch(pair.primary, "SELECT pg_cancel_backend($1)", waiting[0]["pid"])
            stuck_answer = await stuck
            on_primary = await pair.fetch(
                pair.primary, "SELECT position, distinct_id FROM events WHERE product_id = $1 "
                "AND position = 6", run,
            )
            assert on_primary and on_primary[0]["distinct_id"] == f"{run}-100", "committed locally"

            # B hears of position 6 (NOTIFY), reads it, and must hold it back until the standby
            # confirms it (which it cannot). A's subscribers could only get it from A's writer.
            await await_for(
                lambda: _true(b.runtime.hub.confirmer.refused >= 1 or any(6 in s.positions for s in subs)),
                timeout=20, what="position 6 read by the other receiver",
            )
            # PostHog retries the 503 while the standby is still away: the event is a duplicate
            # of a commit the standby does not have, so this is no 200 either.
            early_retry = await post(b.base_url, 100)
            streamed_before_failover = sorted({p for s in subs for p in s.positions if p > 5})
            stock_before_failover = list(stock_seen)

            # The primary dies; the standby, which never got position 6, is promoted.
            t_fail = time.monotonic()
            pair.crash_primary()
            pair.promote_standby()
            after = None
            while after is None or after.status_code != 200:
                assert time.monotonic() - t_fail < 60, "no 200 from the promoted standby"
                after = await post(a.base_url, 200)  # a new event: it takes position 6 now
            retried = await post(a.base_url, 100)  # PostHog retries the 503
            last = await post(b.base_url, 201)
            assert retried.status_code == 200 and last.status_code == 200
            head = last.json()["position"]
            await await_for(lambda: _true(all(s.last_id >= head for s in subs)), timeout=30,
                            what="every subscriber at the new head")
            await await_for(lambda: _true(len(stock_seen) >= 3),
                            timeout=30, what="the stock client after the failover")
        finally:
            stop.set()
            for t in tasks:
                await cancel(t)
            stock.stop()
            stock_task.cancel()

    table = {
        r["position"]: r["distinct_id"]
        for r in await pair.fetch(
            pair.standby, "SELECT position, distinct_id FROM events WHERE product_id = $1", run
        )
    }
    phantoms = [
        (i, p, f["user_id"], table.get(p))
        for i, s in enumerate(subs) for p, f in s.frames.items() if table.get(p) != f["user_id"]
    ]
    expected_users = [f"{run}-{i}" for i in (200, 100, 201)]  # live: connected after 1-5
    show(
        capsys, "ha/phantom",
        cancelled_commit_answer=stuck_answer.status_code, retry_before_failover=early_retry.status_code,
        position_6_on_old_primary=f"{run}-100",
        streamed_before_failover=streamed_before_failover, stock_before_failover=len(stock_before_failover),
        refused_reads=[r.runtime.hub.confirmer.refused for r in receivers],
        position_6_after_failover=table.get(6), head=head, phantoms=len(phantoms),
        subscriber_positions=[s.positions for s in subs], stock=len(stock_seen),
    )
    assert stuck_answer.status_code == 503, "a commit the standby does not have must not get a 200"
    assert early_retry.status_code == 503, "nor its duplicate"
    assert streamed_before_failover == [], "position 6 was streamed before the standby had it"
    assert table[6] == f"{run}-200" and table[7] == f"{run}-100" and head == 8
    assert not phantoms, phantoms
    for s in subs:
        assert s.positions == list(range(1, head + 1)), s.positions
    assert sorted(stock_seen) == sorted(expected_users) and len(stock_seen) == len(set(stock_seen))

