"""Constant-rate live-activity readers (wrk2-style), run as their own process.

``--conns`` keep-alive connections are the readers; requests are scheduled at ``t0 + i / rate``,
each for a random user, and latency is measured from the *scheduled* time to the end of the
response, so a stalled server is charged for every read it delayed (coordinated omission), as in
:mod:`bench.loadgen`. Raw HTTP/1.1 over asyncio streams (uvloop), no client library in the hot path.
Times come from ``time.perf_counter`` (uvloop's ``loop.time()`` ticks in whole milliseconds, too
coarse next to a 20 ms target).

    python -m bench.pullgen --port P --product prod_x --key rmk_... --users 10000 \\
        --rate 500 --duration 10 --conns 100 --out out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections import Counter
from pathlib import Path

from bench.loadgen import Conn, open_conn


async def run(args: argparse.Namespace) -> dict[str, object]:
    host, port = "127.0.0.1", args.port
    head = (
        f"Host: {host}:{port}\r\nAuthorization: Bearer {args.key}\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    free: asyncio.Queue[Conn] = asyncio.Queue()
    for _ in range(args.conns):
        free.put_nowait(await open_conn(host, port))
    rng = random.Random(args.seed)
    total = int(args.rate * args.duration)
    lat_ok: list[float] = []
    actions: Counter[int] = Counter()
    statuses: Counter[int] = Counter()
    errors = 0
    pending: set[asyncio.Task[None]] = set()

    async def one(conn: Conn, sched: float, user: int) -> None:
        nonlocal errors
        path = f"/users/{args.product}/user-{user}/live-activity?limit={args.limit}"
        try:
            conn.writer.write(f"GET {path} HTTP/1.1\r\n".encode() + head)
            response_head = await conn.reader.readuntil(b"\r\n\r\n")
            status = int(response_head[9:12])
            length = 0
            for line in response_head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await conn.reader.readexactly(length) if length else b""
            done = time.perf_counter()
            statuses[status] += 1
            if status == 200:
                lat_ok.append(done - sched)
                actions[body.count(b'"timestamp_start"')] += 1
            free.put_nowait(conn)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
            conn.writer.close()
            try:
                free.put_nowait(await open_conn(host, port))
            except OSError:
                pass

    t0 = time.perf_counter() + 0.05
    i = 0
    while i < total:
        now = time.perf_counter()
        while i < total and t0 + i / args.rate <= now:
            sched = t0 + i / args.rate
            conn = await free.get()  # waiting for a free reader is charged to the read
            task = loop.create_task(one(conn, sched, rng.randrange(args.users)))
            pending.add(task)
            task.add_done_callback(pending.discard)
            i += 1
            now = time.perf_counter()
        if i < total:
            await asyncio.sleep(max(0.0, t0 + i / args.rate - time.perf_counter()))
    if pending:
        await asyncio.wait(pending, timeout=30)
    return {
        "rate": args.rate,
        "duration_s": args.duration,
        "readers": args.conns,
        "scheduled": total,
        "ok": statuses.get(200, 0),
        "statuses": {str(k): v for k, v in statuses.items()},
        "errors": errors,
        "elapsed_s": round(time.perf_counter() - t0, 3),
        "actions_per_answer": {str(k): v for k, v in sorted(actions.items())},
        "latencies_s": lat_ok,
        "wall0": time.time(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--product", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--conns", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    import uvloop

    Path(args.out).write_text(json.dumps(uvloop.run(run(args))))


if __name__ == "__main__":
    main()
