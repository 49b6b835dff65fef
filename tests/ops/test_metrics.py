"""Every documented metric is exported by /metrics and moves when the receiver works."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from receiver.ops import metrics
from tests.conftest import register_product
from tests.privacy.helpers import read_stream


def scrape(base: str) -> dict[str, float]:
    r = httpx.get(f"{base}/metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out: dict[str, float] = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def value(metrics: dict[str, float], name: str, **labels: str) -> float:
    """The sample ``name`` whose labels include ``labels`` (0 when absent)."""
    for key, v in metrics.items():
        m = re.fullmatch(r"([^{]+)(?:\{(.*)\})?", key)
        assert m
        if m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(have.get(k) == v2 for k, v2 in labels.items()):
            return v
    return 0.0


def click() -> dict[str, Any]:
    return {
        "event": "$autocapture",
        "event_type": "click",
        "uuid": str(uuid.uuid4()),
        "distinct_id": "u-1",
        "session_id": "s-1",
        "current_url": "https://app.example.com/",
        "elements_chain": 'button:text="Go"',
    }


def test_every_metric_is_exported_and_moves(receiver: Any, make_product: Callable[..., Any]) -> None:
    base = receiver.base_url
    product = make_product()
    pid = product.product_id
    route = "/webhook/{product_id}"
    before = scrape(base)
    names = {re.sub(r"\{.*", "", k) for k in before}
    for name in (
        "receiver_commit_batch_events_count",
        "receiver_commit_seconds_count",
        "receiver_db_pool_size",
        "receiver_db_pool_idle",
    ):
        assert name in names, name

    secret = {"x-posthog-secret": product.webhook_secret}
    duplicate = click()
    for body in (click(), click(), duplicate, duplicate):
        assert httpx.post(product.webhook_url, json=body, headers=secret).status_code == 200
    r = httpx.post(product.webhook_url, json=click(), headers={"x-posthog-secret": "wrong"})
    assert r.status_code == 401
    r = httpx.post(product.webhook_url, content=b"{", headers={**secret, "content-type": "application/json"})
    assert r.status_code == 400

    async def streams() -> tuple[dict[str, float], dict[str, float]]:
        auth = {"Authorization": f"Bearer {product.stream_key}"}
        started = asyncio.Event()
        live = asyncio.create_task(read_stream(product.stream_url, headers=auth, frames=1, started=started))
        await asyncio.wait_for(started.wait(), 10)
        during = await asyncio.to_thread(scrape, base)
        r = await asyncio.to_thread(httpx.post, product.webhook_url, json=click(), headers=secret)
        assert r.status_code == 200
        await live
        # A subscriber that starts at 0 is behind the (empty) ring: it replays from Postgres.
        await read_stream(f"{product.stream_url}?since=0", headers=auth, frames=4)
        # The server notices the disconnects asynchronously: wait (bounded) for the gauge.
        async with asyncio.timeout(10):
            while True:
                after = await asyncio.to_thread(scrape, base)
                if value(after, "receiver_stream_subscribers", product_id=pid) == 0:
                    return during, after
                await asyncio.sleep(0.05)

    during, after = asyncio.run(streams())

    assert (
        value(after, "receiver_ingest_requests_total", route=route, status="200")
        - value(before, "receiver_ingest_requests_total", route=route, status="200")
        == 5
    )
    assert value(after, "receiver_ingest_requests_total", route=route, status="401") >= 1
    assert value(after, "receiver_auth_failures_total", kind="ingest") >= 1
    assert value(after, "receiver_ingest_requests_total", route=route, status="400") >= 1
    assert value(after, "receiver_ack_latency_seconds_count", route=route) >= 5
    assert value(after, "receiver_ack_latency_seconds_bucket", route=route, le="+Inf") >= 5
    assert value(after, "receiver_ingest_events_total", outcome="stored") == 4
    assert value(after, "receiver_ingest_events_total", outcome="duplicate") == 1
    assert value(after, "receiver_commit_batch_events_count") >= 4
    assert value(after, "receiver_commit_batch_events_sum") >= 4
    assert value(during, "receiver_stream_subscribers", product_id=pid) == 1
    assert value(after, "receiver_stream_subscribers", product_id=pid) == 0
    assert f'receiver_stream_lag_events{{product_id="{pid}"}}' in after
    assert value(after, "receiver_stream_replayed_events_total", product_id=pid) >= 4
    assert value(after, "receiver_db_pool_size") >= 1
    assert "receiver_db_pool_idle" in after
    # Health and metrics requests are not ingest.
    assert not any('route="/metrics"' in k for k in after)


def test_capture_requests_are_counted_by_route(receiver: Any, make_product: Callable[..., Any]) -> None:
    r = httpx.post(
        f"{receiver.base_url}/e/",
        json={
            "api_key": "phc_unknown",
            "batch": [{"event": "$pageview", "properties": {"distinct_id": "u"}}],
        },
    )
    assert r.status_code == 401
    metrics = scrape(receiver.base_url)
    assert value(metrics, "receiver_ingest_requests_total", route="/e/", status="401") == 1


def _webhook_pids(log: str) -> set[int]:
    """Worker pids that acknowledged a webhook request, from the JSON access log."""
    pids = set()
    for line in log.splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if entry.get("logger") == "receiver.access" and entry.get("route") == "/webhook/{product_id}" \
                and entry.get("status") == 200:
            pids.add(int(entry["pid"]))
    return pids


def test_metrics_add_up_over_workers(spawn_receiver: Callable[..., Any], tmp_path: Path) -> None:
    """With --workers 2 a scrape reaches one worker; it must still report every worker's work."""
    tmp = tmp_path / "tmp"  # where `receiver serve` creates its metrics directory
    tmp.mkdir()
    rp = spawn_receiver("--workers", "2", RECEIVER_LOG_JSON="true", TMPDIR=str(tmp))
    assert len(list(tmp.glob("receiver-metrics-*"))) == 1
    product = register_product(rp.base_url, "mw" + uuid.uuid4().hex[:8])
    secret = {"x-posthog-secret": product.webhook_secret}
    acked = 0
    served_by: set[int] = set()
    # A new connection per request lets the kernel hand each to either worker; go on until
    # both have acknowledged some (bounded), so a one-worker answer cannot pass by luck.
    while len(served_by) < 2 and acked < 1000:
        for _ in range(20):
            r = httpx.post(product.webhook_url, json=click(), headers=secret, timeout=10)
            assert r.status_code == 200
            acked += 1
        served_by = _webhook_pids(rp.log())
    assert len(served_by) == 2, f"every request went to one worker: {served_by}"
    scrapes = [scrape(rp.base_url) for _ in range(6)]  # each reaches either worker
    print(f"[ops/metrics-workers] acked={acked} workers_that_acked={len(served_by)} scrapes={len(scrapes)}")
    for m in scrapes:
        assert value(m, "receiver_ingest_events_total", outcome="stored") == acked
        assert value(
            m, "receiver_ingest_requests_total", route="/webhook/{product_id}", status="200"
        ) == acked
        assert value(m, "receiver_commit_batch_events_sum") == acked
    # A clean stop removes the directory it created.
    assert rp.terminate(signal.SIGTERM) == 0
    assert list(tmp.glob("receiver-metrics-*")) == []


def test_gauges_of_a_killed_worker_are_dropped(tmp_path: Path) -> None:
    """A worker killed without shutting down leaves live-gauge files; a scrape drops them."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    mine = os.getpid()
    files = {
        "dead_gauge": tmp_path / f"gauge_livesum_{dead.pid}.db",
        "dead_max": tmp_path / f"gauge_livemax_{dead.pid}.db",
        "dead_counter": tmp_path / f"counter_{dead.pid}.db",
        "live_gauge": tmp_path / f"gauge_livesum_{mine}.db",
    }
    for f in files.values():
        f.write_bytes(b"")
    metrics.forget_dead_workers(tmp_path)
    left = {name for name, f in files.items() if f.exists()}
    # What the dead worker counted stays counted; what it held open does not.
    assert left == {"dead_counter", "live_gauge"}
