"""Push across real ``receiver serve`` processes on one database: exactly one delivers an
endpoint; ``kill -9`` it and another takes over; a restart loses nothing, and what is sent
twice carries the same id and the same bytes."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import replace

import httpx
import pytest

from tests.conftest import ReceiverProcess
from tests.faults.kit import new_product_id, show, wait_for
from tests.push.endpoint import Received, serve_endpoint
from tests.push.helpers import FAST_ENV, assert_signed, cli_json, post_events, push_product

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def _deliverer_pid(database_url: str, product_id: str) -> int | None:
    holder = cli_json(database_url, "push", "status", product_id)["deliverer"]
    if not holder:
        return None
    return int(holder.rsplit(":", 1)[1])


def _attempts(proc: ReceiverProcess, product_id: str) -> float:
    text = httpx.get(f"{proc.base_url}/metrics", timeout=5).text
    pattern = re.compile(
        rf'^receiver_push_attempts_total\{{outcome="delivered",product_id="{product_id}"\}} (\S+)$',
        re.M,
    )
    m = pattern.search(text)
    return float(m.group(1)) if m else 0.0


def _check_delivery(got: list[Received], positions: list[int]) -> dict[str, int]:
    """Everything arrived, in order; a repeat is the same payload (same id, same bytes)."""
    first: dict[int, Received] = {}
    repeats = 0
    for r in got:
        if r.position in first:
            repeats += 1
            assert r.webhook_id == first[r.position].webhook_id
            assert r.body == first[r.position].body
        else:
            first[r.position] = r
    assert sorted(first) == positions
    # In order per session (the window overlaps sessions, never the payloads of one).
    by_session: dict[str, list[int]] = {}
    for r in got:
        if first[r.position] is r:
            by_session.setdefault(r.json()["session_id"], []).append(r.position)
    assert all(p == sorted(p) for p in by_session.values())
    assert_signed(got)
    return {"delivered": len(first), "sent_twice": repeats}


def test_two_processes_one_deliverer_and_the_other_takes_over_after_kill_9(
    spawn_receiver: Callable[..., ReceiverProcess], database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Takeover with the default claim interval (RECEIVER_PUSH_CLAIM_SECONDS = 2): the figure
    # printed is what an operator gets.
    env = {k: v for k, v in FAST_ENV.items() if k != "RECEIVER_PUSH_CLAIM_SECONDS"}
    a = spawn_receiver(**env)
    b = spawn_receiver(**env)
    with serve_endpoint() as ep:
        product = push_product(a.base_url, ep.url, new_product_id("two"))
        run = product.product_id
        positions = post_events(product, run, range(20))
        via_b = replace(product, base_url=b.base_url)
        positions += post_events(via_b, run, range(20, 40))
        ep.wait_for(lambda reqs: len({r.position for r in reqs}) >= 40, what="40 payloads")
        holder_pid = _deliverer_pid(database_url, run)
        procs = {a.proc.pid: a, b.proc.pid: b}
        assert holder_pid in procs
        holder = procs[holder_pid]
        other = b if holder is a else a
        # Exactly one of them sent anything.
        assert (_attempts(holder, run), _attempts(other, run)) == (40.0, 0.0)

        os.kill(holder.proc.pid, signal.SIGKILL)
        killed_at = time.time()
        assert holder.proc.wait(timeout=10) == -signal.SIGKILL
        via_other = replace(product, base_url=other.base_url)
        positions += post_events(via_other, run, range(40, 60))
        got = ep.wait_for(lambda reqs: len({r.position for r in reqs}) >= 60 and reqs,
                          what="the survivor delivering")
        first_by_survivor = next(r.at for r in got if r.position > 40)
        wait_for(lambda: _deliverer_pid(database_url, run) == other.proc.pid,
                 what="the survivor holding the lock")
        assert _attempts(other, run) >= 20
    figures = _check_delivery(got, positions)
    show(capsys, "push takeover after kill -9",
         first_delivery_by_survivor_after_kill_s=round(first_by_survivor - killed_at, 2),
         claim_interval_s=2, **figures)


def test_kill_9_mid_delivery_then_restart_loses_nothing(
    spawn_receiver: Callable[..., ReceiverProcess], database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    total = 300
    first = spawn_receiver(**FAST_ENV)
    gate = threading.Event()

    def slow(req: Received) -> tuple[int, dict[str, str]]:
        time.sleep(0.02)  # requests are in flight most of the time
        return 200, {}

    with serve_endpoint() as ep:
        ep.respond = slow
        product = push_product(first.base_url, ep.url, new_product_id("crash"))
        positions = post_events(product, product.product_id, range(total))

        def kill_when_halfway(reqs: list[Received]) -> bool:
            if len(reqs) >= total // 2 and not gate.is_set():
                os.kill(first.proc.pid, signal.SIGKILL)
                gate.set()
            return gate.is_set()

        ep.wait_for(kill_when_halfway, what="half of the payloads")
        assert first.proc.wait(timeout=10) == -signal.SIGKILL
        at_kill = len(ep.snapshot())
        assert at_kill < total
        second = spawn_receiver(**FAST_ENV)
        got = ep.wait_for(lambda reqs: len({r.position for r in reqs}) >= total and reqs,
                          timeout=60, what="every payload after the restart")
        wait_for(lambda: cli_json(database_url, "push", "status", product.product_id)["lag"] == 0,
                 what="the durable cursor at the head")
        second.terminate()
    figures = _check_delivery(got, positions)
    show(capsys, "push kill -9 mid-delivery", requests_received_by_the_kill=at_kill, **figures)

