"""Three ``receiver serve`` processes on one primary behind haproxy, with the configuration the
repository ships (``deploy/haproxy.cfg``, shown in docs/high-availability.md).

1. Every subscriber, stock or resuming, gets every position once, whichever receiver haproxy
   connected it to.
2. kill -9 of one receiver under a constant-rate load: every 200 is stored, every failed
   request retried as PostHog retries is stored once, positions stay gap-free, no subscriber
   sees a phantom, resuming subscribers lose nothing; the other receivers never restart.
   Stock subscribers that were on the killed receiver reconnect through haproxy to another
   one; being live tails (the SDK never resumes), they miss what was committed while they
   were away, and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from receiver.storage import devdb
from tests.conftest import register_product
from tests.docblocks import one_block
from tests.faults.kit import ResumingSubscriber, asql, await_for, cancel, new_product_id, show
from tests.ha.load import PostHogLoad, StockSubscriber, figures
from tests.unavailable import unavailable

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "haproxy.cfg"
RATE = 150.0
BEFORE_KILL = 300
AFTER_KILL = 300


@dataclass
class Haproxy:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def marked_down(self) -> list[str]:
        return re.findall(r"Server (\S+) is DOWN", self.log.read_text(errors="replace"))


@contextlib.contextmanager
def haproxy(receivers: list[str], log: Path) -> Iterator[Haproxy]:
    """haproxy as docs/high-availability.md runs it, on deploy/haproxy.cfg (which the page shows
    verbatim: tests/ha/test_docs_page.py)."""
    if shutil.which("haproxy") is None and not Path("/usr/sbin/haproxy").exists():
        unavailable("haproxy is not installed (scripts/ha-deps.sh installs it)")
    command = one_block("docs/high-availability.md", "haproxy -W -db -f deploy/haproxy.cfg", "bash").text
    port = devdb.free_port()
    env = {
        "PATH": f"{os.environ.get('PATH', '/usr/bin:/bin')}:/usr/sbin",
        "RECEIVER_LB_BIND": f"127.0.0.1:{port}",
        **{f"RECEIVER_{n}": addr for n, addr in enumerate(receivers, start=1)},
    }
    check = subprocess.run(["haproxy", "-c", "-f", str(CONFIG)], env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr + check.stdout
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            ["bash", "-c", "exec " + command.strip()], env=env, stdout=fh, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=ROOT,
        )
    h = Haproxy(proc, port, log)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, log.read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{h.base_url}/readyz", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "haproxy did not come up"
            time.sleep(0.05)
        yield h
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


async def _true(value: object) -> bool:
    return bool(value)


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_three_receivers_behind_haproxy_and_the_loss_of_one(
    spawn_receiver: Callable[..., Any], database_url: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rps = [spawn_receiver(RECEIVER_HEARTBEAT_SECONDS="1") for _ in range(3)]
    product = register_product(rps[0].base_url, new_product_id("lb"))
    run = product.product_id
    with haproxy([f"127.0.0.1:{rp.port}" for rp in rps], tmp_path / "haproxy.log") as lb:
        stream_url = f"{lb.base_url}/stream/{run}"
        stock = {f"stock-{k}": StockSubscriber(stream_url, product.stream_key) for k in range(6)}
        resuming = {
            f"{mode}-{k}": ResumingSubscriber(stream_url, product.stream_key, mode=mode)
            for mode in ("header", "since") for k in range(2)
        }
        load = PostHogLoad(lambda: f"{lb.base_url}/webhook/{run}", product.webhook_secret, run, RATE)
        stop_load, stop_subs = asyncio.Event(), asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        try:
            for s in stock.values():  # one at a time: leastconn spreads them 2/2/2
                s.start()
                await asyncio.wait_for(s.connected.wait(), 20)
            tasks = [asyncio.create_task(s.run(stop_subs)) for s in resuming.values()]
            await await_for(lambda: _true(all(s.connects for s in resuming.values())), what="resuming")
            per_receiver = [_streams(rp.base_url, run) for rp in rps]

            # 1. Steady state: everyone gets everything, once.
            load.start(stop_load)
            await await_for(lambda: _true(load.acked() >= BEFORE_KILL), timeout=60, what="acks")
            first = sorted(s.i for s in load.events.values() if s.acked_at is not None)[:BEFORE_KILL]
            want = {f"{run}-{i}" for i in first}
            await await_for(
                lambda: _true(all(want <= set(s.user_ids) for s in stock.values())), timeout=30,
                what="every stock subscriber to have the first events",
            )
            steady_dups = {k: len(s.user_ids) - len(set(s.user_ids)) for k, s in stock.items()}

            # 2. kill -9 of the receiver holding the most streams.
            victim = max(range(3), key=lambda n: per_receiver[n])
            t_kill = time.monotonic()
            rps[victim].proc.send_signal(signal.SIGKILL)
            await await_for(
                lambda: _true(load.acked_after_start(t_kill) >= AFTER_KILL), timeout=60,
                what="200s after the kill",
            )
            stop_load.set()
            await await_for(lambda: _true(load.settled()), timeout=60, what="every event answered")
            head = max(s.position or 0 for s in load.events.values())
            await await_for(
                lambda: _true(all(s.last_id >= head for s in resuming.values())), timeout=60,
                what="resuming subscribers at the head",
            )
            last = f"{run}-{max(load.events)}"
            await await_for(
                lambda: _true(all(last in s.user_ids for s in stock.values())), timeout=60,
                what="stock subscribers to the last event",
            )
            down = lb.marked_down()
        finally:
            stop_load.set()
            await load.close()
            stop_subs.set()
            for t in tasks:
                await cancel(t)
            for s in stock.values():
                await s.stop()

    f = await figures(database_url, load, resuming, stock)
    position_of = {
        r["distinct_id"]: r["position"]
        for r in await asql(
            database_url, "SELECT distinct_id, position FROM events WHERE product_id = $1", run
        )
    }
    # What each stock subscriber got, as runs of consecutive positions: one run from its
    # connection to the head, or two for one that lost its receiver (the live tail resumes at
    # the head of the receiver it reconnects to).
    runs = {k: _runs(sorted(position_of[u] for u in s.user_ids)) for k, s in stock.items()}
    moved = [k for k, s in stock.items() if s.connects > 1]
    stayed = [k for k in stock if k not in moved]
    first_200 = load.first_200_after(t_kill)
    failed = [a for a in load.attempts() if a.status != 200]
    show(
        capsys, "ha/haproxy",
        receivers=3, rate=RATE, streams_per_receiver=per_receiver, killed=f"r{victim + 1}",
        acked_before_kill=load.acked_before(t_kill), acked=f.acked, sent=f.sent, lost=f.lost,
        stored=f.stored, duplicated=f.duplicated, positions_gap_free=f.gap_free, head=f.head,
        phantom_positions=f.phantoms, subscriber_gaps=f.subscriber_gaps,
        subscriber_dups=f.subscriber_dups, steady_state_stock_dups=steady_dups,
        stock_moved=moved, stock_missing=f.stock_missing, stock_dups=f.stock_dups, stock_runs=runs,
        seconds_kill_to_first_200=f"{first_200:.2f}" if first_200 is not None else None,
        failed_attempts=load.statuses(), marked_down=sorted(set(down)),
        others_restarted=[rp.proc.poll() is not None for n, rp in enumerate(rps) if n != victim],
    )
    assert all(v == 0 for v in steady_dups.values())
    assert f.acked == f.sent and f.lost == 0
    assert f.stored == f.sent and f.duplicated == 0 and f.gap_free and f.head == f.sent
    assert f.phantoms == 0
    assert all(v == 0 for v in f.subscriber_gaps.values()) and all(v == 0 for v in f.subscriber_dups.values())
    assert all(v == 0 for v in f.stock_dups.values())
    assert moved and all(f.stock_missing[k] == 0 for k in stayed)
    assert all(len(runs[k]) == 1 and runs[k][0][1] == head for k in stayed)
    assert all(len(runs[k]) == 2 and runs[k][1][1] == head for k in moved)
    assert first_200 is not None
    assert all(a.status is None or a.status >= 500 for a in failed), load.statuses()
    assert all(rp.proc.poll() is None for n, rp in enumerate(rps) if n != victim)


def _runs(positions: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for p in positions:
        if out and p == out[-1][1] + 1:
            out[-1] = (out[-1][0], p)
        else:
            out.append((p, p))
    return out


def _streams(base_url: str, product_id: str) -> int:
    """Open streams of ``product_id`` on one receiver (its /metrics)."""
    text = httpx.get(f"{base_url}/metrics", timeout=5).text
    m = re.search(rf'receiver_stream_subscribers{{product_id="{product_id}"}} (\S+)', text)
    return int(float(m.group(1))) if m else 0
