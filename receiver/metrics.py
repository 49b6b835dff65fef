"""Prometheus metrics, one registry per app so tests can build several apps in one process.

Where each is observed:

* ``receiver_ingest_requests_total{route,status}`` and ``receiver_ack_latency_seconds{route}``:
  the request middleware (``receiver.logging``), for every route tagged ``ingest`` or
  ``capture``; latency is measured to the response start of 2xx answers, i.e. to the durable
  acknowledgement;
* ``receiver_ingest_events_total{outcome}``: the writer, per committed request;
* ``receiver_commit_batch_events`` / ``receiver_commit_seconds``: the writer, per transaction;
* ``receiver_stream_*``: the SSE responses; ``receiver_db_pool_*``: at scrape time;
* ``receiver_auth_failures_total{kind}``: the request middleware, for every 401/403, by the
  route's tag (ingest, capture, stream, products, admin).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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
            ["product_id"], registry=r,
        )
        self.lag_gauge = Gauge(
            "receiver_stream_lag_events", "Events between the newest position and the last "
            "subscriber cursor written, by product.", ["product_id"], registry=r,
        )
        self.replay_counter = Counter(
            "receiver_stream_replayed_events", "Events read from Postgres for subscribers behind "
            "the in-memory ring (replay and catch-up).", ["product_id"], registry=r,
        )
        self.pool_size = Gauge("receiver_db_pool_size", "Open database connections.", registry=r)
        self.pool_idle = Gauge("receiver_db_pool_idle", "Idle database connections.", registry=r)
        self.auth_failures = Counter(
            "receiver_auth_failures", "Rejected credentials by endpoint kind.", ["kind"], registry=r,
        )

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

    def render(self) -> bytes:
        return generate_latest(self.registry)
