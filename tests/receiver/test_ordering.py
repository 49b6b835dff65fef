"""Ordering and delivery across processes, concurrent writers and slow consumers."""

from __future__ import annotations

import asyncio
import socket

import httpx

from tests.conftest import register_product
from tests.payloads import unique
from tests.sse import Collector


async def _post_many(urls_and_secrets: list[tuple[str, str]], n: int, concurrency: int) -> int:
    """POST n unique events spread round-robin over the given receivers; returns 200s."""
    sem = asyncio.Semaphore(concurrency)
    ok = 0

    async def one(i: int, http: httpx.AsyncClient) -> None:
        nonlocal ok
        url, secret = urls_and_secrets[i % len(urls_and_secrets)]
        async with sem:
            r = await http.post(
                url,
                json=unique(distinct_id=f"u{i % 7}", session_id=f"s{i % 5}"),
                headers={"x-posthog-secret": secret},
            )
        if r.status_code == 200:
            ok += 1

    limits = httpx.Limits(max_connections=concurrency * 2)
    async with httpx.AsyncClient(limits=limits, timeout=30) as http:
        await asyncio.gather(*(one(i, http) for i in range(n)))
    return ok


async def test_event_ingested_by_one_process_reaches_subscriber_of_another(spawn_receiver) -> None:  # type: ignore[no-untyped-def]
    a = spawn_receiver()
    b = spawn_receiver()
    product = register_product(a.base_url, "two-proc")
    stream_on_b = f"{b.base_url}/stream/two-proc"
    async with Collector(stream_on_b, product.stream_key) as sub, httpx.AsyncClient() as http:
        r = await http.post(
            product.webhook_url,
            json=unique(distinct_id="via-a"),
            headers={"x-posthog-secret": product.webhook_secret},
        )
        assert r.status_code == 200
        [frame] = await sub.wait_for(1)
    assert frame.json["user_id"] == "via-a"
    assert frame.id is None  # live mode


async def test_concurrent_writers_in_two_processes_never_cause_a_skip(spawn_receiver) -> None:  # type: ignore[no-untyped-def]
    a = spawn_receiver()
    b = spawn_receiver()
    product = register_product(a.base_url, "race")
    targets = [
        (f"{a.base_url}/webhook/race", product.webhook_secret),
        (f"{b.base_url}/webhook/race", product.webhook_secret),
    ]
    n = 600
    # A live reader on each process, connected before the first write, must see every position
    # exactly once and in order: a commit can never become visible after a higher position.
    async with (
        Collector(f"{a.base_url}/stream/race?since=0", product.stream_key) as on_a,
        Collector(f"{b.base_url}/stream/race?since=0", product.stream_key) as on_b,
    ):
        acked = await _post_many(targets, n, concurrency=24)
        assert acked == n
        for sub in (on_a, on_b):
            frames = await sub.wait_for(n, timeout=60)
            positions = [int(f.id) for f in frames]
            assert positions == list(range(1, n + 1))
            # Per-session indexes are gap-free too.
            by_session: dict[str, list[int]] = {}
            for f in frames:
                by_session.setdefault(f.json["session_id"], []).append(f.json["actions"][0]["index"])
            for indexes in by_session.values():
                assert indexes == list(range(len(indexes)))
    print(f"\nconcurrent writers: sent={n} acked={acked} delivered_in_order={n} on each of 2 readers")


async def test_slow_consumer_loses_nothing(receiver_factory) -> None:  # type: ignore[no-untyped-def]
    # A tiny ring forces the slow subscriber to fall behind it and page from Postgres.
    live = receiver_factory(stream_ring_size=16, stream_page_size=50)
    product = register_product(live.base_url, "slow")
    host, port = "127.0.0.1", live.settings.port
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, port))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    request = (
        f"GET /stream/slow?since=0 HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {product.stream_key}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    await loop.sock_sendall(sock, request)
    n = 800
    try:
        # The subscriber reads nothing while everything is written.
        acked = await _post_many([(product.webhook_url, product.webhook_secret)], n, concurrency=16)
        assert acked == n
        feed = live.runtime.hub.feeds["slow"]
        assert len(feed.ring) <= 16  # bounded, whatever the subscriber's lag
        buf = b""
        ids: list[int] = []
        async with asyncio.timeout(60):
            while len(ids) < n:
                chunk = await loop.sock_recv(sock, 2048)
                assert chunk, "stream closed early"
                buf += chunk
                *lines, buf = buf.split(b"\n")
                ids += [int(line[4:]) for line in lines if line.startswith(b"id: ")]
                await asyncio.sleep(0)  # yield, as a slow consumer would
    finally:
        sock.close()
    assert ids == list(range(1, n + 1))
    print(f"\nslow consumer: sent={n} acked={acked} delivered={len(ids)} missing=0")
