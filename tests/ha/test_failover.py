"""Failover under load: pg_auto_failover (a monitor, a primary and a synchronous standby on
localhost, Postgres 15), one ``receiver serve`` on the URI ``pg_autoctl show uri`` prints,
a constant-rate PostHog-like load, stock and resuming subscribers; kill -9 of the primary's
postmaster and of its keeper.

Printed and asserted: acknowledged before the kill, acknowledged in all, lost (0), positions
gap-free after the failover (the table's and every subscriber's), phantom positions (0), the
seconds from the kill to the first 200 on the new primary, and the receiver never restarted.
The same module checks ``receiver db status``, ``/readyz`` and ``/metrics`` on the formation.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import register_product
from tests.docblocks import one_block
from tests.faults.kit import ResumingSubscriber, await_for, cancel, new_product_id, show
from tests.ha.formation import Formation, formation
from tests.ha.load import PostHogLoad, StockSubscriber, figures

ROOT = Path(__file__).resolve().parents[2]
RECEIVER = str(Path(sys.executable).parent / "receiver")
RATE = 100.0  # events/s
DB_TIMEOUT = 2.0
BEFORE_KILL = 300  # acknowledged events before the kill
AFTER_FAILOVER = 300  # acknowledged on the new primary before the load stops


@pytest.fixture(scope="module")
def paf() -> Iterator[Formation]:
    with formation() as f:
        yield f


async def _true(value: object) -> bool:
    return bool(value)


async def _sql(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _db_status(uri: str, user: str = "postgres") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECEIVER_")}
    env.update(RECEIVER_DATABASE_URL=uri, PGUSER=user)
    return subprocess.run(
        [RECEIVER, "db", "status", "--json"], env=env, cwd=ROOT, capture_output=True, text=True,
        timeout=60, check=False,
    )


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_db_status_readyz_and_metrics_show_the_formation(
    paf: Formation, spawn_receiver: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    uri = paf.uri()
    assert "target_session_attrs=read-write" in uri and uri.count(",") == 1
    shown = paf.shell(one_block("docs/high-availability.md", "pg_autoctl show state", "bash").text)
    assert re.search(r"\|\s+primary\s+\|\s+primary$", shown, re.M), shown
    assert re.search(r"\|\s+secondary\s+\|\s+secondary$", shown, re.M) and uri in shown
    # The page's receiver block, as an operator runs it (as root here: the venv is root's).
    receiver_block = one_block("docs/high-availability.md", "receiver db status", "bash").text
    page_run = subprocess.run(
        ["bash", "-ec", receiver_block], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**paf.env, "PATH": f"{Path(sys.executable).parent}:{paf.env['PATH']}"}, check=False,
    )
    assert page_run.returncode == 0, page_run.stderr
    assert "commit_waits_for           the primary and a synchronous standby" in page_run.stdout
    assert "sync_state=quorum" in page_run.stdout and "role=standby" in page_run.stdout
    res = _db_status(uri)
    assert res.returncode == 0, res.stderr
    status = json.loads(res.stdout)
    primary = paf.primary()
    assert status["connected_to"] == f"127.0.0.1:{primary.port} (primary)"
    assert status["synchronous_standby_names"].startswith("ANY 1 (pgautofailover_standby_")
    assert status["commit_waits_for"] == "the primary and a synchronous standby"
    [standby] = status["standbys"]
    assert standby["state"] == "streaming" and standby["sync_state"] == "quorum"
    assert isinstance(standby["replay_lag_bytes"], int)
    assert sorted(h["role"] for h in status["hosts"]) == ["primary", "standby"]

    # An ordinary role does not see the standbys' positions until it is granted pg_monitor.
    primary_dsn = paf.dsn(primary)
    asyncio.run(_sql(primary_dsn, "CREATE ROLE receiver_app LOGIN"))
    hidden = json.loads(_db_status(uri, "receiver_app").stdout)
    grant = one_block("docs/high-availability.md", "GRANT pg_monitor TO receiver_app", "sql").text
    asyncio.run(_sql(primary_dsn, grant))
    granted = json.loads(_db_status(uri, "receiver_app").stdout)
    assert [s["visible"] for s in hidden["standbys"]] == [False]
    assert "GRANT pg_monitor" in hidden["commit_waits_for"]
    assert [s["visible"] for s in granted["standbys"]] == [True]
    assert granted["commit_waits_for"] == "the primary and a synchronous standby"

    rp = spawn_receiver(RECEIVER_DATABASE_URL=uri, PGUSER="postgres")
    ready = httpx.get(f"{rp.base_url}/readyz", timeout=10).json()
    assert ready["status"] == "ready"
    assert ready["database"]["role"] == "primary" and ready["database"]["sync_standbys"] == 1
    assert ready["database"]["standbys"][0]["sync_state"] == "quorum"
    metrics = httpx.get(f"{rp.base_url}/metrics", timeout=10).text
    assert "receiver_db_primary 1.0" in metrics
    assert "receiver_db_sync_required 1.0" in metrics and "receiver_db_sync_standbys 1.0" in metrics
    assert 'receiver_db_standby_lag_bytes{kind="replay",standby="pgautofailover_standby_' in metrics
    show(capsys, "ha/db-status", connected_to=status["connected_to"],
         synchronous_standby_names=status["synchronous_standby_names"],
         hosts=[(h["host"], h["role"]) for h in status["hosts"]])


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_kill_9_of_the_primary_under_load(
    paf: Formation, spawn_receiver: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    uri = paf.uri()
    rp = spawn_receiver(
        RECEIVER_DATABASE_URL=uri, PGUSER="postgres", RECEIVER_DB_TIMEOUT_SECONDS=str(DB_TIMEOUT),
        RECEIVER_POLL_SECONDS="1",
    )
    pid = rp.proc.pid
    product = register_product(rp.base_url, new_product_id("failover"))
    run = product.product_id
    old_primary = paf.primary()

    resuming = {
        "last-event-id": ResumingSubscriber(product.stream_url, product.stream_key, mode="header"),
        "since": ResumingSubscriber(product.stream_url, product.stream_key, mode="since"),
    }
    stock = {f"stock-{k}": StockSubscriber(product.stream_url, product.stream_key) for k in (1, 2)}
    load = PostHogLoad(lambda: product.webhook_url, product.webhook_secret, run, RATE)
    stop_subs, stop_load = asyncio.Event(), asyncio.Event()
    tasks = [asyncio.create_task(s.run(stop_subs)) for s in resuming.values()]
    for s in stock.values():
        s.start()
    try:
        await asyncio.wait_for(asyncio.gather(*(s.connected.wait() for s in stock.values())), 20)
        load.start(stop_load)
        await await_for(lambda: _true(load.acked() >= BEFORE_KILL), timeout=60, what="acks before")

        t_kill = time.monotonic()
        killed = paf.kill_node(old_primary)
        await await_for(
            lambda: _true(load.acked_after_start(t_kill) >= AFTER_FAILOVER), timeout=120,
            what="200s on the new primary",
        )
        stop_load.set()
        await await_for(lambda: _true(load.settled()), timeout=60, what="every event answered")
        new_primary = paf.primary()
        head = max(s.position or 0 for s in load.events.values())
        await await_for(
            lambda: _true(all(s.last_id >= head for s in resuming.values())), timeout=60,
            what="resuming subscribers at the head",
        )
        await await_for(
            lambda: _true(all(len(set(s.user_ids)) >= len(load.events) for s in stock.values())),
            timeout=60, what="stock subscribers to have every event",
        )
    finally:
        stop_load.set()
        await load.close()
        stop_subs.set()
        for t in tasks:
            await cancel(t)
        for s in stock.values():
            await s.stop()

    f = await figures(paf.dsn(new_primary), load, resuming, stock)
    attempts = load.attempts()
    failing = [a for a in attempts if a.status != 200]
    slowest = max(a.ended - a.started for a in attempts)
    first_200 = load.first_200_after(t_kill)
    show(
        capsys, "ha/failover",
        rate=RATE, killed_pids=len(killed), old_primary=old_primary.name, new_primary=new_primary.name,
        acked_before_kill=load.acked_before(t_kill), acked=f.acked, sent=f.sent, lost=f.lost,
        stored=f.stored, duplicated=f.duplicated, positions_gap_free=f.gap_free, head=f.head,
        subscriber_gaps=f.subscriber_gaps, subscriber_dups=f.subscriber_dups,
        stock_missing=f.stock_missing, stock_dups=f.stock_dups, phantom_positions=f.phantoms,
        seconds_kill_to_first_200=f"{first_200:.2f}" if first_200 is not None else None,
        statuses=load.statuses(), slowest_answer_s=f"{slowest:.2f}",
        receiver_restarted=rp.proc.poll() is not None or rp.proc.pid != pid,
    )
    assert new_primary is not old_primary
    assert load.acked_before(t_kill) >= BEFORE_KILL
    assert f.acked == f.sent and f.lost == 0
    assert f.stored == f.sent and f.duplicated == 0 and f.gap_free and f.head == f.sent
    assert f.phantoms == 0
    assert all(v == 0 for v in f.subscriber_gaps.values()) and all(v == 0 for v in f.subscriber_dups.values())
    assert all(v == 0 for v in f.stock_missing.values()) and all(v == 0 for v in f.stock_dups.values())
    assert first_200 is not None
    # Refusals were 503 with Retry-After, never a 4xx nor a dropped connection, and no answer
    # waited much longer than RECEIVER_DB_TIMEOUT_SECONDS (a generous bound: this is about
    # hangs, not speed).
    assert failing and {a.status for a in failing} == {503}, load.statuses()
    assert all(a.retry_after == "1" for a in failing)
    assert slowest < 2 * DB_TIMEOUT + 3
    assert rp.proc.poll() is None and rp.proc.pid == pid, "the receiver must not restart"
