"""Lightweight raw-socket SSE subscribers (asyncio protocols on uvloop), as their own process.

Thousands of httpx clients would measure httpx; these cost a socket and a small object each.

* ``fanout``: open ``--n`` live subscriptions, print ``READY <n>``, record for every frame
  ``(timestamp_start, now)`` (the POST's embedded send time and the arrival time), and on a
  line from stdin write the samples to ``--out``.
* ``replay``: one subscription (e.g. ``?since=0``); count frames until ``--expect`` arrived,
  then write the elapsed time to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

TS = b'"timestamp_start":'
DATA = b"data: {"


class Subscriber(asyncio.Protocol):
    def __init__(
        self,
        request: bytes,
        samples: list[tuple[float, float]] | None,
        on_ready: asyncio.Future[None],
    ) -> None:
        self.request = request
        self.samples = samples
        self.on_ready = on_ready
        self.head = b""
        self.ready = False
        self.rest = b""
        self.frames = 0
        self.status = 0
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if not self.ready:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            self.status = int(self.head[9:12])
            data = self.head[end + 4 :]
            self.head = b""
            self.ready = True
            if not self.on_ready.done():
                if self.status == 200:
                    self.on_ready.set_result(None)
                else:
                    self.on_ready.set_exception(RuntimeError(f"HTTP {self.status}"))
        buf = self.rest + data
        cut = buf.rfind(b"\n\n")
        if cut < 0:
            self.rest = buf
            return
        done, self.rest = buf[: cut + 2], buf[cut + 2 :]
        self.frames += done.count(DATA)
        if self.samples is not None:
            i = done.find(TS)
            while i >= 0:
                j = i + len(TS)
                k = j
                while done[k : k + 1] not in (b",", b"}"):
                    k += 1
                self.samples.append((float(done[j:k]), now))
                i = done.find(TS, k)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.on_ready.done():
            self.on_ready.set_exception(exc or ConnectionError("closed"))
        if not self.closed.done():
            self.closed.set_result(None)


def request_bytes(url: str, token: str) -> tuple[str, int, bytes]:
    u = urlsplit(url)
    path = u.path + (f"?{u.query}" if u.query else "")
    req = (
        f"GET {path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nAccept: text/event-stream\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    ).encode()
    return u.hostname or "127.0.0.1", int(u.port or 80), req


async def fanout(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    host, port, req = request_bytes(args.url, args.token)
    samples: list[tuple[float, float]] = []
    subs: list[Subscriber] = []
    gate = asyncio.Semaphore(args.concurrency)
    errors = 0

    async def connect() -> None:
        nonlocal errors
        async with gate:
            for _attempt in range(5):
                ready = loop.create_future()
                try:
                    _t, p = await loop.create_connection(
                        lambda ready=ready: Subscriber(req, samples, ready), host, port
                    )
                    await asyncio.wait_for(ready, 30)
                    subs.append(p)
                    return
                except (OSError, RuntimeError, TimeoutError):
                    errors += 1
                    await asyncio.sleep(0.2)

    await asyncio.gather(*(connect() for _ in range(args.n)))
    print(f"READY {len(subs)} {errors}", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    result = json.dumps({"connected": len(subs), "connect_errors": errors, "samples": samples})
    Path(args.out).write_text(result)  # noqa: ASYNC240 - after the measurement
    for s in subs:
        s.transport.close()


async def replay(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    host, port, req = request_bytes(args.url, args.token)
    ready = loop.create_future()
    started = time.perf_counter()
    _t, p = await loop.create_connection(lambda: Subscriber(req, None, ready), host, port)  # type: ignore[arg-type]
    await ready
    first_byte = time.perf_counter() - started
    deadline = started + args.timeout
    while p.frames < args.expect and time.perf_counter() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.001)  # polling costs the client, not the receiver
    elapsed = time.perf_counter() - started
    p.transport.close()
    result = json.dumps({"frames": p.frames, "elapsed_s": elapsed, "headers_s": first_byte})
    Path(args.out).write_text(result)  # noqa: ASYNC240 - after the measurement


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["fanout", "replay"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--n", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--expect", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    import uvloop

    uvloop.run(fanout(args) if args.mode == "fanout" else replay(args))


if __name__ == "__main__":
    main()
