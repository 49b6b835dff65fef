"""No phantom reaches an agent or a push endpoint either: an event whose commit's wait for the
synchronous standby was cancelled is visible on the primary only. Live activity (REST; the MCP
tools share its reads) answers 503 rather than show it, and the push deliverer sends none of it;
after the failover, the position belongs to another event, and that is what both serve.

Without the confirmation of agents' and push reads, this test fails twice: live activity shows
the lost click with a 200, and the endpoint receives ``<product>:2`` for the lost event, and then
drops the real event at position 2 as a duplicate of that webhook-id.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from receiver.settings import Settings
from tests.conftest import LiveReceiver, start_live_receiver
from tests.faults.kit import await_for, hog_event, show
from tests.ha.replicas import SyncPair
from tests.pull.helpers import live_activity
from tests.push.endpoint import Endpoint, serve_endpoint
from tests.push.helpers import FAST, push_product

USER = "phantom-reader"


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    with serve_endpoint() as e:
        yield e


@pytest.fixture
def receivers(pair: SyncPair) -> Iterator[list[LiveReceiver]]:
    started: list[LiveReceiver] = []
    try:
        # A takes the writes (its commits may wait long enough for the test to cancel the wait)
        # and pushes nothing; B reads for agents and pushes, and gives up on the standby quickly.
        started.append(start_live_receiver(Settings(
            database_url=pair.uri, port=0, db_timeout_seconds=15.0, poll_seconds=0.5,
            push_enabled=False,
        )))
        started.append(start_live_receiver(Settings(
            database_url=pair.uri, port=0, db_timeout_seconds=1.0, **FAST,
        )))
        yield started
    finally:
        for live in reversed(started):
            live.stop()


def _event(run: str, i: int) -> dict[str, Any]:
    return hog_event(run, i, distinct_id=USER)


def _pages(answer: httpx.Response) -> list[str]:
    return [a["raw_url"].split("/projects/")[1].split("/")[0] for a in answer.json()["actions"]]


async def _true(value: object) -> bool:
    return bool(value)


def _pushed(endpoint: Endpoint, position: int) -> Any:
    async def probe() -> list[Any]:
        return [r for r in endpoint.delivered() if r.position == position]

    return probe


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_agents_and_push_never_see_a_commit_the_standby_lacks(
    pair: SyncPair, receivers: list[LiveReceiver], endpoint: Endpoint,
    capsys: pytest.CaptureFixture[str],
) -> None:
    a, b = receivers
    product = push_product(a.base_url, endpoint.url, "phantom-reads")
    run, key = product.product_id, product.raw["mcp_key"]
    headers = {"x-posthog-secret": product.webhook_secret, "content-type": "application/json"}

    async with httpx.AsyncClient(timeout=30) as http:
        async def post(i: int) -> httpx.Response:
            return await http.post(f"{a.base_url}/webhook/{run}", content=orjson.dumps(_event(run, i)),
                                   headers=headers)

        assert (await post(0)).status_code == 200
        await await_for(_pushed(endpoint, 1), timeout=20, what="position 1 pushed")
        assert _pages(live_activity(b.base_url, run, USER, key)) == ["0"]

        # The standby goes away; the next commit waits for it, and the test cancels that wait.
        pair.stop_standby()
        stuck_task = asyncio.create_task(post(1))
        waiting = await await_for(
            lambda: pair.fetch(pair.primary, "SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep'"),
            what="a commit waiting for the standby",
        )
        await pair.fetch(pair.primary, "SELECT pg_cancel_backend($1)", waiting[0]["pid"])
        stuck = await stuck_task
        on_primary = await pair.fetch(
            pair.primary, "SELECT position FROM events WHERE product_id = $1 AND distinct_id = $2", run, USER,
        )
        assert sorted(r["position"] for r in on_primary) == [1, 2], "committed locally"

        # An agent asks now: B reads position 2 and cannot have it confirmed.
        read_meanwhile = live_activity(b.base_url, run, USER, key)
        # The deliverer hears of position 2 too, reads it, and holds it back.
        assert b.runtime.push is not None
        await await_for(lambda: _true(b.runtime.push.confirmer.refused >= 1), timeout=30,
                        what="the push deliverer refusing an unconfirmed read")
        pushed_before_failover = sorted({r.position for r in endpoint.delivered()})

        # The primary dies; the standby, which never got position 2, is promoted.
        t_fail = time.monotonic()
        pair.crash_primary()
        pair.promote_standby()
        after = None
        while after is None or after.status_code != 200:
            assert time.monotonic() - t_fail < 60, "no 200 from the promoted standby"
            after = await post(2)  # a new event: it takes position 2 now
        assert after.json()["position"] == 2
        got = await await_for(_pushed(endpoint, 2), timeout=30, what="position 2 pushed after the failover")

    answer = None
    deadline = time.monotonic() + 30
    while answer is None or answer.status_code != 200:  # B's read pool reaches the new primary
        assert time.monotonic() < deadline, answer.text if answer is not None else "no answer"
        answer = live_activity(b.base_url, run, USER, key)
    pushed_2 = {r.json()["actions"][0]["raw_url"] for r in got}
    show(
        capsys, "ha/phantom-reads",
        cancelled_commit=stuck.status_code, live_activity_meanwhile=read_meanwhile.status_code,
        push_refused_reads=b.runtime.push.confirmer.refused, pushed_before_failover=pushed_before_failover,
        position_2_pushed=sorted(pushed_2), live_activity_after=_pages(answer),
    )
    assert stuck.status_code == 503
    assert read_meanwhile.status_code == 503, read_meanwhile.text
    assert pushed_before_failover == [1]
    assert pushed_2 == {"https://app.example.com/projects/2/settings"}
    assert _pages(answer) == ["0", "2"]
