"""Prometheus metrics, one registry per app so tests can build several apps in one process.

Where each is observed:

* ``receiver_ingest_requests_total{route,status}`` and ``receiver_ack_latency_seconds{route}``:
  the request middleware (``receiver.ops.logging``), for every route tagged ``ingest`` or
  ``capture``; latency is measured to the response start of 2xx answers, i.e. to the durable
  acknowledgement;
* ``receiver_ingest_events_total{outcome}``: the writer, per committed request;
* ``receiver_commit_batch_events`` / ``receiver_commit_seconds``: the writer, per transaction;
* ``receiver_stream_*``: the SSE responses; ``receiver_db_pool_*``: at scrape time and after
  every commit;
* ``receiver_auth_failures_total{kind}``: the request middleware, for every 401/403, by the
  route's tag (ingest, capture, stream, products, admin);
* ``receiver_push_*``: the push deliverers (``receiver.delivery.push``); the lag of an endpoint
  is reported by the process delivering it only.
* ``receiver_db_primary``, ``receiver_db_sync_*``, ``receiver_db_standby_lag_bytes``: the
  replication topology (receiver.storage.topology), at scrape time and on every ``/readyz``;
* ``receiver_stream_confirm_*``: reads the synchronous standby had to confirm before they were
  streamed (receiver.storage.replication), at scrape time.

With ``--workers`` > 1 every worker is a separate process and a scrape reaches one of them, so
``receiver serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before the workers
start: each records into its own memory-mapped file there and ``/metrics`` aggregates them all
(prometheus_client's multiprocess mode). Counters and histograms are summed over every worker
that ran; gauges over the live ones (the stream lag: their maximum). A worker the server
killed (it does that to a hung worker, and starts another) never says it is gone: the next
scrape notices its process no longer exists and drops its gauges.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# prometheus_client picks its storage once, when it is imported: so do we.
MULTIPROCESS = bool(os.environ.get(MULTIPROC_ENV))

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)
# Routes whose requests count as ingest (their FastAPI router tags).
INGEST_TAGS = frozenset({"ingest", "capture"})


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "receiver_ingest_requests", "Ingest requests by route and status.",
            ["route", "status"], registry=r,
        )
        self.events = Counter(
            "receiver_ingest_events", "Events accepted, by outcome (stored or duplicate).",
            ["outcome"], registry=r,
        )
        self.ack_latency = Histogram(
            "receiver_ack_latency_seconds", "Time from request start to durable acknowledgement.",
            ["route"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.batch_size = Histogram(
            "receiver_commit_batch_events", "Events per group-commit transaction.",
            buckets=BATCH_BUCKETS, registry=r,
        )
        self.commit_seconds = Histogram(
            "receiver_commit_seconds", "Duration of one group-commit transaction.",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.subscriber_gauge = Gauge(
            "receiver_stream_subscribers", "Open SSE subscribers by product.",
            ["product_id"], registry=r, multiprocess_mode="livesum",
        )
        self.lag_gauge = Gauge(
            "receiver_stream_lag_events", "Events between the newest position and the last "
            "subscriber cursor written, by product.", ["product_id"], registry=r,
            multiprocess_mode="livemax",
        )
        self.replay_counter = Counter(
            "receiver_stream_replayed_events", "Events read from Postgres for subscribers behind "
            "the in-memory ring (replay and catch-up).", ["product_id"], registry=r,
        )
        self.pool_size = Gauge(
            "receiver_db_pool_size", "Open database connections.", registry=r,
            multiprocess_mode="livesum",
        )
        self.pool_idle = Gauge(
            "receiver_db_pool_idle", "Idle database connections.", registry=r,
            multiprocess_mode="livesum",
        )
        self.auth_failures = Counter(
            "receiver_auth_failures", "Rejected credentials by endpoint kind.", ["kind"], registry=r,
        )
        self.push_lag_gauge = Gauge(
            "receiver_push_lag_events", "Events stored but not yet delivered (nor dead-lettered) "
            "to the product's push endpoint; reported by the process delivering it.",
            ["product_id"], registry=r, multiprocess_mode="livemax",
        )
        self.push_attempts = Counter(
            "receiver_push_attempts", "Push requests by product and outcome (delivered, retry, "
            "dead).", ["product_id", "outcome"], registry=r,
        )
        self.push_request_seconds = Histogram(
            "receiver_push_request_seconds", "Duration of one push request, to its answer or "
            "error.", buckets=LATENCY_BUCKETS, registry=r,
        )
        self.push_delivery_seconds = Histogram(
            "receiver_push_delivery_seconds", "From an event's receipt to the 2xx of its push.",
            buckets=(*LATENCY_BUCKETS, 10.0, 30.0, 60.0, 300.0), registry=r,
        )
        self.db_primary = Gauge(
            "receiver_db_primary", "1 when the database the receiver reaches is a primary, 0 when "
            "it is a standby or unreachable.", registry=r, multiprocess_mode="livemax",
        )
        self.db_sync_required = Gauge(
            "receiver_db_sync_required", "1 when commits wait for a synchronous standby "
            "(synchronous_standby_names is set).", registry=r, multiprocess_mode="livemax",
        )
        self.db_sync_standbys = Gauge(
            "receiver_db_sync_standbys", "Streaming standbys a commit can wait for (sync or "
            "quorum).", registry=r, multiprocess_mode="livemax",
        )
        self.db_standby_lag = Gauge(
            "receiver_db_standby_lag_bytes", "WAL bytes a standby has not flushed or replayed "
            "yet.", ["standby", "kind"], registry=r, multiprocess_mode="livemax",
        )
        self.confirm_barriers = Counter(
            "receiver_stream_confirm_barriers", "Barrier commits run to learn that the "
            "synchronous standby has what a read saw.", registry=r,
        )
        self.confirm_refused = Counter(
            "receiver_stream_confirm_refused", "Reads not streamed because the synchronous standby "
            "did not confirm them in time (retried later).", registry=r,
        )
        self._confirm_seen = (0, 0)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        if 200 <= status < 300:
            self.ack_latency.labels(route).observe(seconds)

    def observe_outcomes(self, stored: int, duplicates: int) -> None:
        if stored:
            self.events.labels("stored").inc(stored)
        if duplicates:
            self.events.labels("duplicate").inc(duplicates)

    def observe_commit(self, n: int, seconds: float) -> None:
        self.batch_size.observe(n)
        self.commit_seconds.observe(seconds)

    def subscribers(self, product_id: str, delta: int) -> None:
        self.subscriber_gauge.labels(product_id).inc(delta)

    def lag(self, product_id: str, lag: int) -> None:
        self.lag_gauge.labels(product_id).set(lag)

    def replayed(self, product_id: str, n: int) -> None:
        if n:
            self.replay_counter.labels(product_id).inc(n)

    def push_attempt(self, product_id: str, outcome: str, seconds: float) -> None:
        self.push_attempts.labels(product_id, outcome).inc()
        self.push_request_seconds.observe(seconds)

    def push_delivered(self, product_id: str, since_receipt: float) -> None:
        self.push_delivery_seconds.observe(max(since_receipt, 0.0))

    def push_lag(self, product_id: str, lag: int) -> None:
        self.push_lag_gauge.labels(product_id).set(lag)

    def push_forget(self, product_id: str) -> None:
        """This process no longer delivers the product: its lag is someone else's to report."""
        with contextlib.suppress(KeyError):
            self.push_lag_gauge.labels(product_id).set(0)
            self.push_lag_gauge.remove(product_id)

    def observe_pool(self, size: int, idle: int) -> None:
        self.pool_size.set(size)
        self.pool_idle.set(idle)

    def observe_topology(self, t: dict[str, object] | None) -> None:
        self.db_standby_lag.clear()
        if t is None:
            self.db_primary.set(0)
            return
        self.db_primary.set(1 if t["role"] == "primary" else 0)
        self.db_sync_required.set(1 if t["sync_required"] else 0)
        self.db_sync_standbys.set(int(t["sync_standbys"]))  # type: ignore[call-overload]
        for s in t["standbys"]:  # type: ignore[attr-defined]
            for kind in ("flush", "replay"):
                lag = s.get(f"{kind}_lag_bytes")
                if lag is not None:
                    self.db_standby_lag.labels(str(s.get("name")), kind).set(lag)

    def observe_confirmations(self, barriers: int, refused: int) -> None:
        """The confirmer's running totals, turned into counter increments."""
        seen_b, seen_r = self._confirm_seen
        if barriers > seen_b:
            self.confirm_barriers.inc(barriers - seen_b)
        if refused > seen_r:
            self.confirm_refused.inc(refused - seen_r)
        self._confirm_seen = (max(barriers, seen_b), max(refused, seen_r))

    def render(self) -> bytes:
        if MULTIPROCESS:
            # Every worker's files, this one's included; our own registry would show one worker.
            forget_dead_workers(Path(os.environ[MULTIPROC_ENV]))
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)
            return generate_latest(merged)
        return generate_latest(self.registry)

    def close(self) -> None:
        """This worker is going away: its live gauges stop counting (counters stay)."""
        if MULTIPROCESS:
            multiprocess.mark_process_dead(os.getpid())


def forget_dead_workers(directory: Path) -> None:
    """Drop the live gauges of workers whose process is gone (killed, so never closed)."""
    for path in directory.glob("gauge_live*_*.db"):
        try:
            pid = int(path.stem.rsplit("_", 1)[1])
        except ValueError:
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, str(directory))
        except PermissionError:
            pass  # alive, under another user


@contextlib.contextmanager
def shared_across_workers() -> Iterator[Path]:
    """For the lifetime of the server: the directory its workers record into.

    Set up before the workers start (they inherit the environment). A directory the operator
    chose with PROMETHEUS_MULTIPROC_DIR (also honoured with one worker) is created if need be
    and emptied of a previous run's files, not removed.
    """
    chosen = os.environ.get(MULTIPROC_ENV)
    if chosen:
        path = Path(chosen)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix="receiver-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)
