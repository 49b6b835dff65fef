"""SSE subscribers survive the death of their receiver: ``kill -9`` it while events flow, start
a new one on the same port, and the subscribers reconnect and resume by position, one with
the ``Last-Event-ID`` header and one with ``?since=`` — missing nothing, receiving nothing twice.

The stock SDK cannot resume (it never sends Last-Event-ID); these subscribers are the small
resuming client a browser EventSource or a custom bridge would be (``tests.faults.kit``).
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
    ResumingSubscriber,
    asql,
    await_for,
    cancel,
    gaps_and_dups,
    hog_event,
    new_product_id,
    post_load,
    show,
)

BEFORE = 400  # events posted around the kill
AFTER = 200  # events posted to the new receiver
CONCURRENCY = 8
KILL_AFTER_ACKS = 250


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_subscribers_resume_across_a_receiver_crash(
    spawn_receiver: Callable[..., Any], database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    first = spawn_receiver()
    product = register_product(first.base_url, new_product_id("resume"))
    run = product.product_id
    url = f"{first.base_url}/stream/{product.product_id}"
    subs = [
        ResumingSubscriber(url, product.stream_key, mode="header"),
        ResumingSubscriber(url, product.stream_key, mode="since"),
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(s.run(stop, max_backoff=0.3)) for s in subs]
    try:
        await await_for(lambda: _true(all(s.connects for s in subs)), what="subscribers connected")

        kill = asyncio.Event()
        seen_at_kill: list[int] = []

        def kill_once(result: LoadResult) -> None:
            if len(result.acked) >= KILL_AFTER_ACKS and not kill.is_set():
                os.kill(first.proc.pid, signal.SIGKILL)
                seen_at_kill.extend(s.last_id for s in subs)
                kill.set()

        load = await post_load(
            product.webhook_url, product.webhook_secret,
            [(i, hog_event(run, i)) for i in range(BEFORE)],
            concurrency=CONCURRENCY, on_ack=kill_once, stop=kill,
        )
        assert kill.is_set() and first.proc.wait(timeout=10) == -signal.SIGKILL

        # Started from a thread so the subscribers keep retrying (and failing) meanwhile.
        second = await asyncio.to_thread(spawn_receiver, port=first.port)
        # PostHog retries what failed; the rest of the load goes to the new process.
        rest = [i for i in range(BEFORE) if i not in load.acked]
        more = await post_load(
            product.webhook_url, product.webhook_secret,
            [(i, hog_event(run, i)) for i in rest + list(range(BEFORE, BEFORE + AFTER))],
            concurrency=CONCURRENCY,
        )
        assert more.statuses == {200: len(rest) + AFTER}, (more.statuses, more.errors)

        head = (await asql(database_url, "SELECT last_position FROM products WHERE product_id = $1",
                           product.product_id))[0][0]
        await await_for(
            lambda: _true(all(s.last_id >= head for s in subs)), timeout=30,
            what=f"both subscribers to reach position {head}",
        )
    finally:
        stop.set()
        for t in tasks:
            await cancel(t)

    rows = await asql(database_url, "SELECT position, distinct_id FROM events WHERE product_id = $1",
                      product.product_id)
    table = {r["position"]: r["distinct_id"] for r in rows}
    figures: dict[str, Any] = {
        "sent": BEFORE + AFTER, "acked_before_kill": len(load.acked), "stored": len(rows), "head": head,
        "seen_at_kill": seen_at_kill,
    }
    for name, s in zip(("header", "since"), subs, strict=True):
        missing, dups = gaps_and_dups(s.positions, head)
        wrong = [p for p, f in s.frames.items() if table.get(p) != f["user_id"]]
        figures[name] = {
            "received": len(s.positions), "missing": len(missing), "duplicated": dups,
            "wrong_frames": len(wrong), "connects": s.connects,
            "failed_attempts": dict(s.failures),
        }
        assert not missing and dups == 0 and not wrong, (name, missing[:10], dups, wrong[:5])
        assert s.connects >= 2  # it really did reconnect to the new process
    show(capsys, "faults/sse-resume", **figures)
    assert len(rows) == head == BEFORE + AFTER
    del second


async def _true(value: bool) -> bool:
    return value
