"""Crash safety: ``kill -9`` of a real ``receiver serve`` process in the middle of a load.

Every event that got a 200 before the kill is in the table exactly once, after a restart it
reaches a subscriber that resumes with ``?since=0``, and the events that were in flight
(never acknowledged) can be retried, as PostHog does, without creating duplicates.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import register_product
from tests.faults.kit import (
    LoadResult,
    asql,
    collect_stream,
    event_uuid,
    gaps_and_dups,
    hog_event,
    new_product_id,
    post_load,
    show,
    stored_uuids,
)

TOTAL = 3000
CONCURRENCY = 32
KILL_AFTER_ACKS = 1000


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_kill_9_under_load_loses_no_acknowledged_event(
    spawn_receiver: Callable[..., Any], database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    first = spawn_receiver()
    product = register_product(first.base_url, new_product_id("crash"))
    run = product.product_id
    bodies = [(i, hog_event(run, i)) for i in range(TOTAL)]

    killed_at: dict[str, int] = {}
    stop = asyncio.Event()

    def kill_once(result: LoadResult) -> None:
        if len(result.acked) >= KILL_AFTER_ACKS and not killed_at:
            os.kill(first.proc.pid, signal.SIGKILL)
            killed_at["acked"] = len(result.acked)
            killed_at["sent"] = result.sent
            stop.set()  # the workers finish what is in flight, then stop

    load = await post_load(
        product.webhook_url, product.webhook_secret, bodies,
        concurrency=CONCURRENCY, on_ack=kill_once, stop=stop,
    )
    assert killed_at, "the load finished before the kill"
    assert first.proc.wait(timeout=10) == -signal.SIGKILL
    assert not load.bad, load.bad[:5]
    acked_before_kill = dict(load.acked)
    unacked = [i for i in range(TOTAL) if i not in acked_before_kill]

    # What survived the crash, before anything is retried.
    after_crash = await stored_uuids(database_url, product.product_id)
    acked_uuids = {event_uuid(run, i) for i in acked_before_kill}
    missing = acked_uuids - after_crash.uuids
    committed_unacked = len(after_crash.uuids - acked_uuids)
    # Each 200 carried the position it was committed at: the table agrees.
    rows = await asql(
        database_url, "SELECT position, event_uuid::text AS u FROM events WHERE product_id = $1",
        product.product_id,
    )
    by_position = {r["position"]: r["u"] for r in rows}
    wrong_position = [
        i for i, pos in acked_before_kill.items() if by_position.get(pos) != event_uuid(run, i)
    ]

    # Restart on the same port; retry what failed (PostHog's retries) and send the rest.
    second = spawn_receiver(port=first.port)
    retry = await post_load(
        product.webhook_url, product.webhook_secret,
        [(i, bodies[i][1]) for i in unacked], concurrency=CONCURRENCY,
    )
    assert retry.statuses == {200: len(unacked)}, (retry.statuses, retry.errors)
    duplicates_on_retry = sum(1 for pos in retry.acked.values() if pos is None)

    final = await stored_uuids(database_url, product.product_id)
    sub = await collect_stream(
        f"{second.base_url}/stream/{product.product_id}", product.stream_key,
        until=final.rows, since=0, timeout=60,
    )
    stream_missing, stream_dups = gaps_and_dups(sub.positions, final.rows)
    streamed_ids = {f["user_id"] for f in sub.frames.values()}
    acked_not_streamed = [i for i in acked_before_kill if f"{run}-{i}" not in streamed_ids]

    show(
        capsys, "faults/kill-9",
        sent=TOTAL, concurrency=CONCURRENCY, sent_before_kill=load.sent,
        acked_before_kill=len(acked_before_kill),
        failed_at_kill=dict(load.errors) | {str(k): v for k, v in load.statuses.items() if k != 200},
        stored_after_crash=after_crash.rows, committed_but_unacked=committed_unacked,
        missing=len(missing), duplicated=after_crash.duplicated, wrong_position=len(wrong_position),
        sent_after_restart=len(unacked), duplicates_on_retry=duplicates_on_retry, stored_final=final.rows,
        streamed=len(sub.positions), stream_missing=len(stream_missing), stream_duplicated=stream_dups,
    )
    assert not missing
    assert after_crash.duplicated == 0 and after_crash.positions_gap_free
    assert not wrong_position
    assert duplicates_on_retry == committed_unacked
    assert final.rows == final.distinct == TOTAL and final.duplicated == 0 and final.positions_gap_free
    assert not stream_missing and stream_dups == 0
    assert not acked_not_streamed
