"""Constant-rate webhook load generator (wrk2-style), run as its own process.

Requests are scheduled at ``t0 + i / rate``. Latency is measured from the *scheduled* send time
to the end of the response, so a stalled server is charged for every request it delayed
(coordinated omission): if no connection is free at the scheduled time, the wait counts. Each
body carries its scheduled send time (wall clock, epoch seconds) as ``timestamp``, which the
receiver stores as ``occurred_at`` and streams as ``timestamp_start``: the end-to-end
scenarios compute delivery latency from it.

Raw HTTP/1.1 over keep-alive asyncio streams (uvloop), no client library in the hot path.

    python -m bench.loadgen --targets targets.json --rate 1000 --duration 10 --out out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections import Counter
from pathlib import Path

from bench.common import body, uuid_for


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer


async def open_conn(host: str, port: int) -> Conn:
    r, w = await asyncio.open_connection(host, port)
    return Conn(r, w)


async def run(args: argparse.Namespace) -> dict[str, object]:
    targets = json.loads(Path(args.targets).read_text())  # noqa: ASYNC240 - before any load
    host, port = targets[0]["host"], int(targets[0]["port"])
    heads = [
        (
            f"POST {t['path']} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"x-posthog-secret: {t['secret']}\r\ncontent-type: application/json\r\n"
        ).encode()
        for t in targets
    ]
    loop = asyncio.get_running_loop()
    free: asyncio.Queue[Conn] = asyncio.Queue()
    for _ in range(args.conns):
        free.put_nowait(await open_conn(host, port))

    total = int(args.rate * args.duration)
    lat_ok: list[float] = []
    service: list[float] = []
    statuses: Counter[int] = Counter()
    errors = 0
    prefix = int.from_bytes(os.urandom(6), "big")
    pending: set[asyncio.Task[None]] = set()

    async def one(conn: Conn, i: int, sched: float, wall: float) -> None:
        nonlocal errors
        b = body(uuid_for(prefix, i), wall, i)
        t = heads[i % len(heads)]
        sent = loop.time()
        try:
            conn.writer.write(t + b"content-length: %d\r\n\r\n" % len(b) + b)
            head = await conn.reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await conn.reader.readexactly(length)
            done = loop.time()
            statuses[status] += 1
            if status == 200:
                lat_ok.append(done - sched)
                service.append(done - sent)
            free.put_nowait(conn)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
            conn.writer.close()
            try:
                free.put_nowait(await open_conn(host, port))
            except OSError:
                pass

    t0 = loop.time() + 0.05
    wall0 = time.time() + (t0 - loop.time())
    i = 0
    while i < total:
        now = loop.time()
        # Send everything that is due; sleep only when nothing is (timer granularity is ~1 ms).
        while i < total and t0 + i / args.rate <= now:
            sched = t0 + i / args.rate
            conn = await free.get()  # waiting here is charged to the request: sched is fixed
            task = loop.create_task(one(conn, i, sched, wall0 + (sched - t0)))
            pending.add(task)
            task.add_done_callback(pending.discard)
            i += 1
            now = loop.time()
        if i < total:
            await asyncio.sleep(max(0.0, t0 + i / args.rate - loop.time()))
    if pending:
        await asyncio.wait(pending, timeout=30)
    elapsed = loop.time() - t0
    return {
        "rate": args.rate,
        "duration_s": args.duration,
        "scheduled": total,
        "ok": statuses.get(200, 0),
        "statuses": {str(k): v for k, v in statuses.items()},
        "errors": errors,
        "elapsed_s": round(elapsed, 3),
        "wall0": wall0,
        "latencies_s": lat_ok,
        "service_s": service,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", required=True)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--conns", type=int, default=64)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    import uvloop

    result = uvloop.run(run(args))
    Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
