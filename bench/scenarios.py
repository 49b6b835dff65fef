"""The scenarios of ``make bench``. Each returns plain data for ``results.json``.

All traffic is on 127.0.0.1. Every process is started through :class:`bench.common.Procs`
and stopped in a ``finally``; every loop is bounded in time.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.common import (
    BODY_TEMPLATE,
    PY,
    ROOT,
    SESSIONS,
    VENV_BIN,
    Procs,
    body,
    free_port,
    rss_kib,
    summarize_ms,
    uuid_for,
)

LUA = ROOT / "bench" / "wrk" / "webhook.lua"


@dataclass
class Ctx:
    procs: Procs
    db_url: str  # postgresql+asyncpg://… of the durable bench cluster
    work: Path  # scratch directory for child outputs and logs
    quick: bool = False
    smoke: bool = False  # tiny sizes: proves the harness end to end, measures nothing
    profile_dir: Path | None = None

    def seconds(self, full: float, quick: float) -> float:
        if self.smoke:
            return 1.0
        return quick if self.quick else full


# --------------------------------------------------------------------------- postgres


@contextmanager
def durable_postgres() -> Iterator[tuple[Any, str]]:
    """A throwaway cluster with the receiver's durability: fsync and synchronous_commit on."""
    from receiver.storage import devdb, migrate

    root = Path(tempfile.mkdtemp(prefix="rcvbench", dir="/tmp"))  # short path: socket limit
    srv = devdb.server(root / "data", ephemeral=False)
    srv.start()
    try:
        asyncio.run(_admin(srv.dsn("postgres"), "CREATE DATABASE bench"))
        url = srv.url("bench")
        migrate.upgrade(url)
        yield srv, url
    finally:
        srv.stop(mode="immediate")
        devdb.remove(root)


async def _admin(dsn: str, *sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        for s in sql:
            await conn.execute(s)
    finally:
        await conn.close()


async def pg_settings(dsn: str) -> dict[str, str]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        out = {}
        for name in (
            "server_version", "fsync", "synchronous_commit", "full_page_writes", "wal_sync_method",
            "commit_delay", "shared_buffers", "max_wal_size",
        ):
            out[name] = await conn.fetchval(f"SHOW {name}")
        return out
    finally:
        await conn.close()


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _count_events(url: str, product_id: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(_dsn(url))
    try:
        return int(await conn.fetchval("SELECT count(*) FROM events WHERE product_id=$1", product_id))
    finally:
        await conn.close()


# --------------------------------------------------------------------------- servers


@dataclass
class Server:
    proc: subprocess.Popen[Any]
    port: int
    kind: str

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_receiver(ctx: Ctx, workers: int = 1, **env_extra: str) -> Server:
    port = free_port()
    env = {
        **os.environ,
        "RECEIVER_DATABASE_URL": ctx.db_url,
        "RECEIVER_HOST": "127.0.0.1",
        "RECEIVER_PORT": str(port),
        "RECEIVER_LOG_LEVEL": "WARNING",
        # Heartbeats every 15 s by default; keep them out of the measured windows.
        "RECEIVER_HEARTBEAT_SECONDS": "60",
        **env_extra,
    }
    log = (ctx.work / f"receiver-{port}.log").open("wb")
    p = ctx.procs.start(
        [str(VENV_BIN / "receiver"), "serve", "--workers", str(workers)],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
    )
    _wait_ready(f"http://127.0.0.1:{port}/readyz", p)
    return Server(p, port, "receiver")


def start_noop(ctx: Ctx, workers: int = 1) -> Server:
    port = free_port()
    log = (ctx.work / f"noop-{port}.log").open("wb")
    p = ctx.procs.start(
        [PY, "-m", "bench.noop_app", "--port", str(port), "--workers", str(workers)],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
    )
    _wait_ready(f"http://127.0.0.1:{port}/readyz", p)
    return Server(p, port, "noop")


def _wait_ready(url: str, proc: subprocess.Popen[Any], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early ({proc.returncode}); see logs")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout}s")


@dataclass
class Product:
    product_id: str
    secret: str
    token: str


def make_product(srv: Server, product_id: str) -> Product:
    r = httpx.post(
        f"{srv.base}/products", json={"product_id": product_id, "contact_email": "bench@example.com"},
        timeout=10,
    )
    r.raise_for_status()
    d = r.json()
    return Product(product_id, d["webhook_secret"], d["unkey_key"])


# --------------------------------------------------------------------------- 1 / 6: ingest


def wrk(ctx: Ctx, url: str, secret: str, seconds: float, conns: int) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (bench/run.sh installs it with apt-get)")
    env = {
        **os.environ,
        "BENCH_SECRET": secret,
        "BENCH_BODY": BODY_TEMPLATE,
        "BENCH_SESSIONS": str(SESSIONS),
        "BENCH_RUN": str(int.from_bytes(os.urandom(3), "big")),
    }
    res = subprocess.run(
        ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--timeout", "10s", "-s",
         str(LUA), url],
        env=env, capture_output=True, text=True, timeout=seconds + 60, check=False,
    )
    line = next((x for x in res.stdout.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {res.stdout[-1000:]} {res.stderr[-1000:]}")
    d = json.loads(line[6:])
    secs = d["duration_us"] / 1e6
    d["ok_per_s"] = round(d["ok"] / secs, 1)
    d["req_per_s"] = round(d["requests"] / secs, 1)
    return d


def ingest(ctx: Ctx, workers: int, conns: int = 64, rounds: int = 2) -> dict[str, Any]:
    """wrk against the no-op ceiling and the receiver, same uvicorn settings and workers.

    The machine is shared and its load drifts, so the two are measured alternately
    (ceiling, receiver, ceiling, receiver, …) and the ratio is taken over the sums.
    """
    if ctx.smoke and shutil.which("wrk") is None:
        return {"skipped": "wrk is not installed"}
    rounds = 1 if ctx.smoke else rounds
    secs = ctx.seconds(5, 3)
    warm = ctx.seconds(2, 1)
    out: dict[str, Any] = {"workers": workers, "connections": conns, "seconds": secs * rounds,
                           "rounds": rounds}
    noop = start_noop(ctx, workers)
    srv = None
    try:
        srv = start_receiver(ctx, workers)
        noop_url = f"{noop.base}/webhook/noop"
        wrk(ctx, noop_url, "x", warm, conns)
        warmup = make_product(srv, f"warm-w{workers}-{os.getpid()}")
        wrk(ctx, f"{srv.base}/webhook/{warmup.product_id}", warmup.secret, warm, conns)
        prod = make_product(srv, f"ingest-w{workers}-{os.getpid()}")
        url = f"{srv.base}/webhook/{prod.product_id}"
        ceil_runs, rec_runs = [], []
        for r in range(rounds):
            ceil_runs.append(wrk(ctx, noop_url, "x", secs, conns))
            profile = (_start_pyspy(ctx, srv.proc.pid, secs, f"ingest-w{workers}")
                       if workers == 1 and r == 0 else None)
            rec_runs.append(wrk(ctx, url, prod.secret, secs, conns))
            _finish_pyspy(ctx, profile)
        out["ceiling"] = _sum_wrk(ceil_runs)
        rec = _sum_wrk(rec_runs)
        # Every 200 must be a stored row; requests still in flight when wrk stops may
        # commit without their 200 being counted (at most `conns` per run).
        rec["db_rows"] = asyncio.run(_count_events(ctx.db_url, prod.product_id))
        rec["batch"] = _commit_batch_stats(srv)
        out["receiver"] = rec
    finally:
        if srv is not None:
            ctx.procs.stop(srv.proc)
        ctx.procs.stop(noop.proc)
    out["ratio"] = round(out["receiver"]["ok_per_s"] / out["ceiling"]["ok_per_s"], 3)
    return out


def _sum_wrk(runs: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {k: sum(r[k] for r in runs) for k in (
        "ok", "bad", "requests", "duration_us", "err_connect", "err_read", "err_write",
        "err_timeout", "err_status",
    )}
    secs = total["duration_us"] / 1e6
    total["ok_per_s"] = round(total["ok"] / secs, 1)
    total["req_per_s"] = round(total["requests"] / secs, 1)
    total["runs_ok_per_s"] = [r["ok_per_s"] for r in runs]
    total["lat_p50_us"] = max(r["lat_p50_us"] for r in runs)
    total["lat_p99_us"] = max(r["lat_p99_us"] for r in runs)
    return total


def _commit_batch_stats(srv: Server) -> dict[str, float] | None:
    """Mean events per group commit and mean commit time, from the receiver's /metrics."""
    try:
        text = httpx.get(f"{srv.base}/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    vals: dict[str, float] = {}
    for line in text.splitlines():
        for name in (
            "receiver_commit_batch_events_sum", "receiver_commit_batch_events_count",
            "receiver_commit_seconds_sum", "receiver_commit_seconds_count",
        ):
            if line.startswith(name + " "):
                vals[name] = float(line.split()[1])
    n = vals.get("receiver_commit_batch_events_count") or 0
    if not n:
        return None
    return {
        "commits": n,
        "mean_events_per_commit": round(vals["receiver_commit_batch_events_sum"] / n, 2),
        "mean_commit_ms": round(vals["receiver_commit_seconds_sum"] / n * 1000, 3),
    }


# --------------------------------------------------------------------------- profiling


def _start_pyspy(
    ctx: Ctx, pid: int, secs: float, name: str
) -> tuple[subprocess.Popen[Any], Path] | None:
    """py-spy the receiver (and its workers) for ``secs`` when --profile is on."""
    if ctx.profile_dir is None:
        return None
    out = ctx.profile_dir / f"profile-{name}.folded"
    p = ctx.procs.start(
        [str(VENV_BIN / "py-spy"), "record", "--pid", str(pid), "--duration", str(max(1, int(secs))),
         "--rate", "250", "--format", "raw", "--nonblocking", "--subprocesses", "-o", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)  # attach before the load starts
    return p, out


def _finish_pyspy(ctx: Ctx, handle: tuple[subprocess.Popen[Any], Path] | None) -> None:
    if handle is None:
        return
    p, _out = handle
    try:
        p.wait(timeout=60)
    finally:
        ctx.procs.stop(p)


# --------------------------------------------------------------------------- 1b: ack latency


def loadgen(ctx: Ctx, targets: list[dict[str, Any]], rate: float, seconds: float) -> dict[str, Any]:
    tfile = ctx.work / f"targets-{time.monotonic_ns()}.json"
    tfile.write_text(json.dumps(targets))
    out = ctx.work / f"loadgen-{time.monotonic_ns()}.json"
    p = ctx.procs.start(
        [PY, "-m", "bench.loadgen", "--targets", str(tfile), "--rate", str(rate),
         "--duration", str(seconds), "--out", str(out)],
        cwd=ROOT,
    )
    try:
        p.wait(timeout=seconds + 90)
    finally:
        ctx.procs.stop(p)
    return json.loads(out.read_text())


def ack_latency(ctx: Ctx, rate: float = 1000) -> dict[str, Any]:
    rate = 200 if ctx.smoke else rate
    secs = ctx.seconds(10, 3)
    warm = 1.0
    srv = start_receiver(ctx, 1)
    try:
        prod = make_product(srv, f"ack-{os.getpid()}")
        tgt = [{"host": "127.0.0.1", "port": srv.port, "path": f"/webhook/{prod.product_id}",
                "secret": prod.secret}]
        res = loadgen(ctx, tgt, rate, secs + warm)
    finally:
        ctx.procs.stop(srv.proc)
    lat = res["latencies_s"][int(rate * warm):]
    out = {
        "rate": rate, "seconds": secs, "scheduled": res["scheduled"], "ok": res["ok"],
        "statuses": res["statuses"], "errors": res["errors"],
        **summarize_ms(lat),
        "service_time": summarize_ms(res["service_s"][int(rate * warm):]),
    }
    return out


# --------------------------------------------------------------------------- 2: end to end


def e2e(ctx: Ctx, subscribers: int, rate: float = 1000) -> dict[str, Any]:
    """POST → stock AsyncConnectorClient callback. ``subscribers`` products, one bridge each."""
    rate = 200 if ctx.smoke else rate
    secs = ctx.seconds(10, 3)
    warm = 1.0
    srv = start_receiver(ctx, 1)
    sub = None
    try:
        prods = [make_product(srv, f"e2e{subscribers}-{k}-{os.getpid()}") for k in range(subscribers)]
        sfile = ctx.work / f"subs-{subscribers}.json"
        sfile.write_text(json.dumps(
            [{"url": f"{srv.base}/stream/{p.product_id}", "token": p.token} for p in prods]
        ))
        sout = ctx.work / f"subs-{subscribers}-out.json"
        sub = ctx.procs.start(
            [PY, "-m", "bench.subscriber", "--targets", str(sfile), "--out", str(sout)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )
        _expect_ready(sub, 90)
        tgt = [{"host": "127.0.0.1", "port": srv.port, "path": f"/webhook/{p.product_id}",
                "secret": p.secret} for p in prods]
        profile = _start_pyspy(ctx, srv.proc.pid, secs, f"e2e-{subscribers}")
        res = loadgen(ctx, tgt, rate, secs + warm)
        _finish_pyspy(ctx, profile)
        time.sleep(1.0)  # let the last frames arrive
        assert sub.stdin is not None
        sub.stdin.write("DUMP\n")
        sub.stdin.flush()
        sub.wait(timeout=60)
        data = json.loads(sout.read_text())
    finally:
        if sub is not None:
            ctx.procs.stop(sub)
        ctx.procs.stop(srv.proc)
    # Timestamps travel as %.6f text and come back through a datetime: compare with a margin
    # far below the 1 ms between two sends, so the boundary event counts on both sides.
    cutoff = res["wall0"] + warm - 0.25 / rate
    lat = [d for ts, d in data["samples"] if ts >= cutoff]
    expected = sum(1 for i in range(res["scheduled"]) if res["wall0"] + i / rate >= cutoff)
    return {
        "subscribers": subscribers, "products": subscribers, "rate": rate, "seconds": secs,
        "posted_ok": res["ok"], "delivered": len(lat), "expected": expected,
        **summarize_ms(lat),
        "ack": summarize_ms(res["latencies_s"][int(rate * warm):]),
    }


def _expect_ready(p: subprocess.Popen[Any], timeout: float) -> str:
    assert p.stdout is not None
    deadline = time.monotonic() + timeout
    os.set_blocking(p.stdout.fileno(), False)
    buf = ""
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise RuntimeError(f"subscriber process exited early ({p.returncode})")
        chunk = p.stdout.readline()
        if chunk:
            buf += chunk
            if buf.startswith("READY"):
                return buf.strip()
        time.sleep(0.05)
    raise RuntimeError("subscribers did not connect in time")


# --------------------------------------------------------------------------- 3: fan-out


def fanout(ctx: Ctx, n: int, rounds: int = 5, client_procs: int = 2) -> dict[str, Any]:
    rounds = 1 if ctx.smoke else rounds
    srv = start_receiver(ctx, 1)
    clients: list[tuple[subprocess.Popen[Any], Path]] = []
    try:
        prod = make_product(srv, f"fanout{n}-{os.getpid()}")
        url = f"{srv.base}/webhook/{prod.product_id}"
        # Warm the code paths (one subscriber, a few events) so RSS growth is the subscribers'.
        _warm_stream(ctx, srv, prod, url)
        time.sleep(0.5)
        before = rss_kib(srv.proc.pid)
        per = [n // client_procs + (1 if k < n % client_procs else 0) for k in range(client_procs)]
        for k, m in enumerate(per):
            out = ctx.work / f"fanout-{n}-{k}.json"
            p = ctx.procs.start(
                [PY, "-m", "bench.sse_client", "fanout", "--url", f"{srv.base}/stream/{prod.product_id}",
                 "--token", prod.token, "--n", str(m), "--out", str(out)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
            )
            clients.append((p, out))
        connected = 0
        for p, _ in clients:
            connected += int(_expect_ready(p, 120).split()[1])
        time.sleep(1.0)
        after = rss_kib(srv.proc.pid)
        acked: dict[float, float] = {}
        profile = _start_pyspy(ctx, srv.proc.pid, rounds, f"fanout-{n}")
        with httpx.Client(timeout=10) as http:
            for r in range(rounds):
                ts = round(time.time(), 6)  # what the frame will carry as timestamp_start
                b = body(uuid_for(n, 10_000 + r), ts, r)
                resp = http.post(url, content=b, headers={"x-posthog-secret": prod.secret,
                                                          "content-type": "application/json"})
                resp.raise_for_status()
                acked[ts] = time.time()
                time.sleep(1.0)
        _finish_pyspy(ctx, profile)
        samples: list[list[float]] = []
        for p, out in clients:
            assert p.stdin is not None
            p.stdin.write("DUMP\n")
            p.stdin.flush()
            p.wait(timeout=60)
            samples += json.loads(out.read_text())["samples"]
    finally:
        for p, _ in clients:
            ctx.procs.stop(p)
        ctx.procs.stop(srv.proc)
    return {
        "subscribers": n, "connected": connected, "rounds": rounds,
        "rss_before_kib": before, "rss_after_kib": after,
        "kib_per_subscriber": round((after - before) / max(1, connected), 2),
        "delivered": len(samples), "expected": connected * rounds,
        # From the POST being sent (the event's whole trip: commit, fan-out, delivery).
        **summarize_ms(now - ts for ts, now in samples),
        # From the 200 (what fan-out alone adds once the event is committed).
        "after_ack": summarize_ms(
            max(0.0, now - acked[min(acked, key=lambda k, ts=ts: abs(k - ts))])
            for ts, now in samples
        ) if acked else None,
    }


def _warm_stream(ctx: Ctx, srv: Server, prod: Product, url: str) -> None:
    out = ctx.work / f"warm-{srv.port}.json"
    p = ctx.procs.start(
        [PY, "-m", "bench.sse_client", "fanout", "--url", f"{srv.base}/stream/{prod.product_id}",
         "--token", prod.token, "--n", "20", "--out", str(out)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        _expect_ready(p, 60)
        with httpx.Client(timeout=10) as http:
            for r in range(3):
                http.post(url, content=body(uuid_for(7, r), time.time(), r),
                          headers={"x-posthog-secret": prod.secret}).raise_for_status()
        time.sleep(0.3)
        assert p.stdin is not None
        p.stdin.write("DUMP\n")
        p.stdin.flush()
        p.wait(timeout=30)
    finally:
        ctx.procs.stop(p)


# --------------------------------------------------------------------------- 4: replay


def replay(ctx: Ctx, events: int = 100_000, runs: int = 2) -> dict[str, Any]:
    if ctx.quick:
        events = 10_000
    if ctx.smoke:
        events = 500
    srv = start_receiver(ctx, 1)
    try:
        prod = make_product(srv, f"replay-{os.getpid()}")
        t = time.perf_counter()
        asyncio.run(_bulk_load(ctx.db_url, prod.product_id, events))
        load_s = time.perf_counter() - t
        results = []
        for r in range(runs):
            profile = _start_pyspy(ctx, srv.proc.pid, 3, "replay") if r == 0 else None
            out = ctx.work / f"replay-{r}.json"
            p = ctx.procs.start(
                [PY, "-m", "bench.sse_client", "replay", "--url",
                 f"{srv.base}/stream/{prod.product_id}?since=0", "--token", prod.token,
                 "--expect", str(events), "--timeout", "120", "--out", str(out)],
                cwd=ROOT,
            )
            try:
                p.wait(timeout=150)
            finally:
                ctx.procs.stop(p)
            _finish_pyspy(ctx, profile)
            d = json.loads(out.read_text())
            d["events_per_s"] = round(d["frames"] / d["elapsed_s"], 1)
            results.append(d)
    finally:
        ctx.procs.stop(srv.proc)
    return {
        "events": events, "bulk_load_s": round(load_s, 2), "runs": results,
        "events_per_s": results[0]["events_per_s"],
        "complete": all(r["frames"] == events for r in results),
    }


def _pendings(product_id: str, start: int, n: int) -> list[Any]:
    import orjson

    from receiver.ingest import normalize
    from receiver.storage.store import Pending
    from receiver.storage.writer import MonotonicClock

    clock = MonotonicClock()
    out = []
    for i in range(start, start + n):
        now = clock.now()
        raw = orjson.loads(body(uuid_for(0xBEEF, i), now.timestamp(), i))
        out.append(Pending(product_id, now, normalize.from_webhook(raw, received_at=now)))
    return out


async def _bulk_load(url: str, product_id: str, n: int, batch: int = 1000) -> None:
    from receiver.storage import store

    pool = await store.create_pool(url, max_size=2, timeout=30)
    batch = min(batch, n)  # the first chunk is the template: never more than n events
    try:
        template = _pendings(product_id, 0, batch)
        for start in range(0, n, batch):
            chunk = template if start == 0 else _pendings(product_id, start, min(batch, n - start))
            async with pool.acquire() as conn:
                await store.append(conn, chunk)
    finally:
        await pool.close()


# --------------------------------------------------------------------------- 5: database ceiling


def db_ceiling(ctx: Ctx) -> dict[str, Any]:
    return asyncio.run(_db_ceiling(ctx))


async def _db_ceiling(ctx: Ctx) -> dict[str, Any]:
    import asyncpg

    from receiver.storage import store

    secs = 0.3 if ctx.smoke else ctx.seconds(3, 1)
    pid = f"dbceil-{os.getpid()}"
    pool = await store.create_pool(ctx.db_url, max_size=70, timeout=30)
    out: dict[str, Any] = {"seconds_each": secs}
    try:
        async with pool.acquire() as conn:
            for suffix in ("copy", "single", "append"):
                await conn.execute(
                    "INSERT INTO products (product_id, contact_email, capture_token) "
                    "VALUES ($1, 'bench@example.com', $2)", f"{pid}-{suffix}", f"tok-{pid}-{suffix}",
                )
        rows = _pendings(f"{pid}-copy", 0, 1000)
        base = [store._record(p, 0, 0) for p in rows]
        position = 0

        def records(k: int) -> list[tuple[Any, ...]]:
            nonlocal position
            recs = []
            for i in range(k):
                position += 1
                r = list(base[i % len(base)])
                r[1] = position
                r[8] = f"k{position}"
                recs.append(tuple(r))
            return recs

        for batch in (1000, 100):
            n = 0
            t0 = time.perf_counter()
            async with pool.acquire() as conn:
                while time.perf_counter() - t0 < secs:
                    recs = records(batch)
                    async with conn.transaction():
                        await conn.copy_records_to_table(
                            "events", records=recs, columns=store.EVENT_INSERT_COLUMNS
                        )
                    n += batch
            out[f"copy_batch_{batch}"] = round(n / (time.perf_counter() - t0), 1)

        cols = ", ".join(store.EVENT_INSERT_COLUMNS)
        params = ", ".join(f"${i + 1}" for i in range(len(store.EVENT_INSERT_COLUMNS)))
        insert = f"INSERT INTO events ({cols}) VALUES ({params})"  # noqa: S608 - our column names
        single_pos = 0

        async def single(conn: asyncpg.Connection, deadline: float) -> int:
            nonlocal single_pos
            k = 0
            while time.perf_counter() < deadline:
                single_pos += 1
                r = list(base[single_pos % len(base)])
                r[0], r[1], r[8] = f"{pid}-single", single_pos, f"s{single_pos}"
                await conn.execute(insert, *r)  # autocommit: one fsync'd commit per row
                k += 1
            return k

        for nconn in (1, 64):
            conns = [await pool.acquire() for _ in range(nconn)]
            try:
                t0 = time.perf_counter()
                counts = await asyncio.gather(*(single(c, t0 + secs) for c in conns))
                out[f"insert_single_commit_{nconn}conn"] = round(
                    sum(counts) / (time.perf_counter() - t0), 1
                )
            finally:
                for c in conns:
                    await pool.release(c)

        # The receiver's own transaction (dedup keys, position, session counters, COPY,
        # NOTIFY) without HTTP: how much of the gap is our SQL, how much is the web tier.
        # Only the time inside store.append counts (normalizing the inputs is not its work).
        seq = 0
        for batch in (1, 16, 64, 1000):
            n = 0
            spent = 0.0
            async with pool.acquire() as conn:
                while spent < secs:
                    chunk = _pendings(f"{pid}-append", seq, batch)
                    seq += batch
                    t0 = time.perf_counter()
                    await store.append(conn, chunk)
                    spent += time.perf_counter() - t0
                    n += batch
            out[f"store_append_batch_{batch}"] = round(n / spent, 1)
    finally:
        await pool.close()
    return out


# --------------------------------------------------------------------------- 7: live activity




def make_project(srv: Server, project_id: str) -> dict[str, Any]:
    """A product registered by project id (autoplay-sdk 0.13.0's body): id, ingest secret, MCP key."""
    r = httpx.post(
        f"{srv.base}/products", timeout=10,
        json={"provider": "posthog", "provider_project_id": project_id,
              "contact_email": "bench@example.com"},
    )
    r.raise_for_status()
    d = r.json()
    return {"product_id": d["product_id"], "secret": d["credentials"]["ingest_secret"],
            "mcp_key": d["credentials"]["mcp_key"]}


async def _seed_activity(url: str, product_id: str, events: int, users: int) -> dict[str, Any]:
    """``events`` rows for ``users`` users, interleaved (each user's rows spread over the whole
    table), received over the last ~20 minutes (all inside the live window: the worst case for
    it), a quarter of them internal events ($identify) that live activity never reads. COPY, in
    chunks."""
    import asyncpg

    from receiver.ingest import normalize
    from receiver.storage import store
    from receiver.storage.store import Pending

    now = datetime.now(UTC)
    pages = ["team", "billing", "projects/8821034", "settings/profile", "reports"]
    templates = []
    for k, page in enumerate(pages):
        for kind, extra in (("$pageview", {}), ("$autocapture", {"$el_text": f"Button {k}"}),
                            ("$autocapture", {"$el_text": f"Save {k}"}), ("$identify", {})):
            raw = orjson.loads(body(uuid_for(0xA11CE, k), now.timestamp(), k))
            raw.update({"event": kind, "current_url": f"https://app.example.com/{page}?tab=x", **extra})
            templates.append(store._record(Pending(product_id, now, normalize.from_webhook(
                raw, received_at=now)), 0, 0))
    span = timedelta(minutes=20)
    conn = await asyncpg.connect(store.asyncpg_dsn(url))
    await store._init_connection(conn)
    t = time.perf_counter()
    try:
        chunk = 50_000
        for start in range(0, events, chunk):
            records = []
            for i in range(start, min(events, start + chunk)):
                user = i % users
                tpl = templates[(i // users) % len(templates)]
                at = now - span + span * (i / events)
                r = list(tpl)
                r[1], r[2], r[3] = i + 1, at, at  # position, received_at, occurred_at
                r[8] = f"h:seed-{i}"  # dedup_key
                r[9], r[10] = f"s-{user}-{i // (users * 25)}", f"user-{user}"  # session, distinct_id
                r[23] = i // users  # session_index
                records.append(tuple(r))
            await conn.copy_records_to_table(
                "events", records=records, columns=store.EVENT_INSERT_COLUMNS
            )
        await conn.execute("UPDATE products SET last_position = $2 WHERE product_id = $1",
                           product_id, events)
        await conn.execute("ANALYZE events")
        if EVENT_INDEX:
            await conn.execute("DROP INDEX ix_events_live_activity")
            await conn.execute(EVENT_INDEX_SQL)
            await conn.execute("ANALYZE events")
            await conn.execute("CHECKPOINT")
        load_s = time.perf_counter() - t
        plan = await conn.fetchval(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + _live_sql(),
            product_id, "user-7", now - timedelta(minutes=30), 20,
        )
        total = await conn.fetchval("SELECT count(*) FROM events")
    finally:
        await conn.close()
    top = orjson.loads(plan)[0] if isinstance(plan, str) else plan[0]
    per_user = events // users
    visible = sum(1 for j in range(per_user) if templates[j % len(templates)][6] != "internal")
    return {"seed_s": round(load_s, 1), "events_in_table": int(total),
            "expected_per_answer": min(20, visible),
            "plan": _plan_summary(top["Plan"]), "plan_ms": top.get("Execution Time")}


# BENCH_LIVE_INDEX=event: measure the alternative to ix_events_live_activity's one key per user,
# one key per event (product_id, distinct_id, position): reads stop at the limit, but every insert
# lands at a random place in a large index (docs/performance.md compares the two).
EVENT_INDEX = os.environ.get("BENCH_LIVE_INDEX") == "event"
EVENT_INDEX_SQL = (
    "CREATE INDEX ix_events_live_activity_event ON events (product_id, distinct_id, position) "
    "WHERE action_type <> 'internal'"
)


def _live_sql() -> str:
    from receiver.storage.reads import LIVE_ACTIVITY_SEEN_SQL

    return LIVE_ACTIVITY_SEEN_SQL


def _plan_summary(node: dict[str, Any]) -> list[str]:
    """The plan's nodes, one line each: type, relation/index, rows (what EXPLAIN shows first)."""
    out: list[str] = []

    def walk(n: dict[str, Any], depth: int) -> None:
        what = n.get("Index Name") or n.get("Relation Name") or ""
        out.append(f"{'  ' * depth}{n['Node Type']} {what} rows={n.get('Actual Rows')} "
                   f"buffers={n.get('Shared Hit Blocks', 0) + n.get('Shared Read Blocks', 0)}".rstrip())
        for child in n.get("Plans", []):
            walk(child, depth + 1)

    walk(node, 0)
    return out


def pullgen(ctx: Ctx, srv: Server, project: dict[str, Any], users: int, rate: float,
            seconds: float, readers: int) -> dict[str, Any]:
    out = ctx.work / f"pullgen-{time.monotonic_ns()}.json"
    p = ctx.procs.start(
        [PY, "-m", "bench.pullgen", "--port", str(srv.port), "--product", project["product_id"],
         "--key", project["mcp_key"], "--users", str(users), "--rate", str(rate),
         "--duration", str(seconds), "--conns", str(readers), "--out", str(out)],
        cwd=ROOT,
    )
    try:
        p.wait(timeout=seconds + 90)
    finally:
        ctx.procs.stop(p)
    return json.loads(out.read_text())


def live_activity(ctx: Ctx, events: int = 1_000_000, users: int = 10_000, readers: int = 100,
                  rate: float = 500) -> dict[str, Any]:
    """GET live-activity at ``events`` stored events: ``readers`` keep-alive readers at a constant
    ``rate`` (open loop: latency from the scheduled time), then as fast as they can (wrk)."""
    if ctx.quick:
        events = 100_000
    if ctx.smoke:
        events, users, readers, rate = 2_000, 100, 10, 100
    secs = ctx.seconds(10, 3)
    srv = start_receiver(ctx, 1, RECEIVER_READ_RATE_LIMIT="0")
    try:
        project = make_project(srv, f"live-{os.getpid()}")
        seeded = asyncio.run(_seed_activity(ctx.db_url, project["product_id"], events, users))
        pullgen(ctx, srv, project, users, rate, 1.0, readers)  # warm the pools and caches
        res = pullgen(ctx, srv, project, users, rate, secs, readers)
        saturated = None
        if shutil.which("wrk") is not None:
            saturated = _wrk_live(ctx, srv, project, users, secs, readers)
    finally:
        ctx.procs.stop(srv.proc)
    return {
        "events": events, "users": users, "readers": readers, "rate": rate, "seconds": secs,
        **seeded,
        "scheduled": res["scheduled"], "ok": res["ok"], "statuses": res["statuses"],
        "errors": res["errors"], "actions_per_answer": res["actions_per_answer"],
        **summarize_ms(res["latencies_s"]),
        "saturated": saturated,
    }


def _wrk_live(ctx: Ctx, srv: Server, project: dict[str, Any], users: int, seconds: float,
              conns: int) -> dict[str, Any]:
    env = {**os.environ, "BENCH_PRODUCT": project["product_id"], "BENCH_KEY": project["mcp_key"],
           "BENCH_USERS": str(users), "BENCH_LIMIT": "20"}
    res = subprocess.run(
        ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--timeout", "10s", "-s",
         str(ROOT / "bench" / "wrk" / "live.lua"), f"{srv.base}/"],
        env=env, capture_output=True, text=True, timeout=seconds + 60, check=False,
    )
    line = next((x for x in res.stdout.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {res.stdout[-1000:]} {res.stderr[-1000:]}")
    d = json.loads(line[6:])
    d["ok_per_s"] = round(d["ok"] / (d["duration_us"] / 1e6), 1)
    return d


def ingest_index_ab(ctx: Ctx, conns: int = 64, rounds: int = 4) -> dict[str, Any]:
    """Ingest with and without ix_events_live_activity, on copies of the same table (whatever the
    earlier scenarios left in it: after live_activity, a million rows).

    The copy without the index is a second database made from the first as a template, so
    neither side pays for building or dropping an index (and the checkpoint that follows)
    during the measurement. Two receivers, one per database; the runs alternate ABBA so drift
    in the shared machine's load falls on both sides alike.
    """
    if shutil.which("wrk") is None:
        if ctx.smoke:
            return {"skipped": "wrk is not installed"}
        raise RuntimeError("wrk is not installed (bench/run.sh installs it with apt-get)")
    rounds = 1 if ctx.smoke else rounds
    secs = ctx.seconds(4, 2)
    name = ctx.db_url.rsplit("/", 1)[1]
    bare = f"{name}_noindex"
    bare_url = ctx.db_url.rsplit("/", 1)[0] + "/" + bare
    admin = _dsn(ctx.db_url).rsplit("/", 1)[0] + "/postgres"
    asyncio.run(_admin(admin, f"CREATE DATABASE {bare} TEMPLATE {name}"))
    servers: list[Server] = []
    try:
        index = "ix_events_live_activity_event" if EVENT_INDEX else "ix_events_live_activity"
        asyncio.run(_admin(_dsn(bare_url), f"DROP INDEX {index}"))
        with_idx = start_receiver(ctx, 1)
        servers.append(with_idx)
        without = start_receiver(ctx, 1, RECEIVER_DATABASE_URL=bare_url)
        servers.append(without)
        sides = {}
        for label, srv in (("with_index", with_idx), ("without_index", without)):
            project = make_project(srv, f"ab-{label}-{os.getpid()}")
            url = f"{srv.base}/ingest/{project['product_id']}"
            wrk(ctx, url, project["secret"], ctx.seconds(2, 1), conns)  # warm-up
            sides[label] = (url, project)
        runs: dict[str, list[dict[str, Any]]] = {"with_index": [], "without_index": []}
        order = ["with_index", "without_index", "without_index", "with_index"] * rounds
        for label in order[: 2 * rounds] if ctx.smoke else order:
            url, project = sides[label]
            runs[label].append(wrk(ctx, url, project["secret"], secs, conns))
        # Run k of one side is paired with run k of the other (adjacent in the ABBA order).
        pair_ratios = sorted(
            a["ok_per_s"] / b["ok_per_s"]
            for a, b in zip(runs["with_index"], runs["without_index"], strict=True) if b["ok_per_s"]
        )
        rows = {
            "with_index": asyncio.run(_count_events(ctx.db_url, sides["with_index"][1]["product_id"])),
            "without_index": asyncio.run(_count_events(bare_url, sides["without_index"][1]["product_id"])),
        }
        table = asyncio.run(_count_all(ctx.db_url))
        for srv in servers:
            ctx.procs.stop(srv.proc)
        servers.clear()
        appends = asyncio.run(_append_ab(ctx, ctx.db_url, bare_url))
    finally:
        for srv in servers:
            ctx.procs.stop(srv.proc)
        asyncio.run(_admin(admin, f"DROP DATABASE IF EXISTS {bare} WITH (FORCE)"))
    a, b = _sum_wrk(runs["with_index"]), _sum_wrk(runs["without_index"])
    return {
        "rounds": len(runs["with_index"]), "seconds_each": secs, "connections": conns,
        "rows_in_table": table, "db_rows": rows, "with_index": a, "without_index": b,
        "ratio": round(a["ok_per_s"] / b["ok_per_s"], 3) if b["ok_per_s"] else None,
        "median_pair_ratio": round(pair_ratios[len(pair_ratios) // 2], 3) if pair_ratios else None,
        "store_append": appends,
    }


async def _append_ab(ctx: Ctx, with_url: str, without_url: str, batch: int = 16) -> dict[str, Any]:
    """The write path alone (store.append, batches of ``batch``: the group commit's usual size
    under load), with and without the index, alternating short bursts: many alternations make
    the shared machine's drift fall on both sides alike. The median of the per-pair ratios."""
    from receiver.storage import store

    bursts = 2 if ctx.smoke else 30
    burst_s = 0.1 if ctx.smoke else 0.5
    pools = {}
    seq = 0
    per_side: dict[str, list[float]] = {"with_index": [], "without_index": []}
    try:
        for label, url in (("with_index", with_url), ("without_index", without_url)):
            pools[label] = await store.create_pool(url, max_size=1, timeout=30)
            async with pools[label].acquire() as conn:
                await conn.execute(
                    "INSERT INTO products (product_id, contact_email, capture_token) "
                    "VALUES ('ab-append', 'bench@example.com', 'tok-ab-append') ON CONFLICT DO NOTHING"
                )
        for i in range(bursts):
            for label in (("with_index", "without_index") if i % 2 == 0
                          else ("without_index", "with_index")):
                n, spent = 0, 0.0
                async with pools[label].acquire() as conn:
                    while spent < burst_s:
                        chunk = _pendings("ab-append", seq, batch)
                        seq += batch
                        t0 = time.perf_counter()
                        await store.append(conn, chunk)
                        spent += time.perf_counter() - t0
                        n += batch
                per_side[label].append(n / spent)
    finally:
        for pool in pools.values():
            await pool.close()
    ratios = sorted(a / b for a, b in zip(per_side["with_index"], per_side["without_index"],
                                          strict=True))
    return {
        "batch": batch, "bursts": bursts, "burst_s": burst_s,
        "with_index_rows_per_s": round(sum(per_side["with_index"]) / bursts, 1),
        "without_index_rows_per_s": round(sum(per_side["without_index"]) / bursts, 1),
        "median_ratio": round(ratios[len(ratios) // 2], 3),
    }


async def _count_all(url: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(_dsn(url))
    try:
        return int(await conn.fetchval("SELECT count(*) FROM events"))
    finally:
        await conn.close()
# --------------------------------------------------------------------------- 6: push


def start_sink(ctx: Ctx) -> Server:
    port = free_port()
    log = (ctx.work / f"sink-{port}.log").open("wb")
    p = ctx.procs.start([PY, "-m", "bench.push_sink", "--port", str(port)],
                        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    _wait_ready(f"http://127.0.0.1:{port}/readyz", p)
    return Server(p, port, "sink")


def make_push_product(srv: Server, product_id: str, sink: Server) -> Product:
    r = httpx.post(f"{srv.base}/products", json={
        "product_id": product_id, "contact_email": "bench@example.com",
        "integration_config": {"mode": "push", "url": f"{sink.base}/push",
                               "secret": "bench-push-secret-0123456789"},
    }, timeout=10)
    r.raise_for_status()
    d = r.json()
    return Product(product_id, d["webhook_secret"], d["unkey_key"])


def _sink_stats(sink: Server) -> dict[str, Any]:
    return httpx.get(f"{sink.base}/stats", timeout=30).json()


def _wait_sink(sink: Server, count: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        stats = _sink_stats(sink)
        if stats["count"] >= count or time.monotonic() > deadline:
            return stats
        time.sleep(0.2)


def push_throughput(ctx: Ctx, events: int = 20_000) -> dict[str, Any]:
    """A backlog of ``events`` pushed to a no-op endpoint, one payload per POST, in order.

    The ceiling (same run, same sink) is one client POSTing the same number of bodies one at a
    time with httpx, as the deliverer does, but reading, signing and recording nothing.
    """
    events = 300 if ctx.smoke else 3000 if ctx.quick else events
    sink = start_sink(ctx)
    srv = None
    try:
        # Registered while this receiver does not push, loaded, then pushed by a fresh one.
        srv = start_receiver(ctx, 1, RECEIVER_PUSH_ENABLED="false")
        prod = make_push_product(srv, f"pushtp-{os.getpid()}", sink)
        asyncio.run(_bulk_load(ctx.db_url, prod.product_id, events))
        ctx.procs.stop(srv.proc)
        srv = start_receiver(ctx, 1)
        stats = _wait_sink(sink, events, timeout=60 + events / 100)
        arrivals = sorted(s[0] for s in stats["samples"])
        positions = [s[2] for s in stats["samples"]]
        elapsed = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else 0.0
        out: dict[str, Any] = {
            "events": events, "delivered": len(set(positions)), "requests": stats["count"],
            "in_order_per_session": _in_order_per_session(stats["samples"]),
            "elapsed_s": round(elapsed, 3),
            "payloads_per_s": round((len(arrivals) - 1) / elapsed, 1) if elapsed else None,
        }
        httpx.post(f"{sink.base}/reset", timeout=10)
        out["ceiling"] = asyncio.run(_httpx_ceiling(f"{sink.base}/push", events))
        if out["payloads_per_s"]:
            out["ratio"] = round(out["payloads_per_s"] / out["ceiling"]["posts_per_s"], 3)
    finally:
        if srv is not None:
            ctx.procs.stop(srv.proc)
        ctx.procs.stop(sink.proc)
    return out


def _in_order_per_session(samples: list[list[Any]]) -> bool:
    """Each session's payloads arrived in position order (the window overlaps sessions)."""
    seen: dict[str, int] = {}
    for _arrival, _ts, position, session in samples:
        if position <= seen.get(session, 0):
            return False
        seen[session] = position
    return True


async def _httpx_ceiling(url: str, n: int) -> dict[str, Any]:
    rows = _pendings("ceiling", 0, min(n, 1000))
    import orjson

    from receiver.delivery.wire import actions_payload
    from receiver.storage.store import _stream_row

    bodies = [orjson.dumps(actions_payload(_stream_row(p, i + 1, 0, None)))
              for i, p in enumerate(rows)]
    async with httpx.AsyncClient(timeout=10) as client:
        t0 = time.perf_counter()
        for i in range(n):
            r = await client.post(url, content=bodies[i % len(bodies)],
                                  headers={"content-type": "application/json"})
            r.raise_for_status()
        elapsed = time.perf_counter() - t0
    return {"posts": n, "posts_per_s": round(n / elapsed, 1)}


def push_latency(ctx: Ctx, rate: float = 1000) -> dict[str, Any]:
    """POST → push received, at ``rate`` events/s, in two layouts: push in the ingesting
    process (``same_process``), and push in a second receiver process while the ingesting one
    runs with RECEIVER_PUSH_ENABLED=false (``own_process``, docs/push.md). Each also measures the
    acknowledgement latency of the same load to a product without push (is ingest unchanged?)."""
    return {
        "rate": 200 if ctx.smoke else rate,
        "same_process": _push_latency(ctx, rate, split=False),
        "own_process": _push_latency(ctx, rate, split=True),
    }


def _push_latency(ctx: Ctx, rate: float, *, split: bool) -> dict[str, Any]:
    rate = 200 if ctx.smoke else rate
    secs = ctx.seconds(10, 3)
    warm = 1.0
    sink = start_sink(ctx)
    srv = start_receiver(ctx, 1, **({"RECEIVER_PUSH_ENABLED": "false"} if split else {}))
    pusher = start_receiver(ctx, 1) if split else None
    try:
        plain = make_product(srv, f"pushlat-off-{int(split)}-{os.getpid()}")
        pushed = make_push_product(srv, f"pushlat-on-{int(split)}-{os.getpid()}", sink)
        acks: dict[str, Any] = {}
        for label, prod in (("push_off", plain), ("push_on", pushed)):
            tgt = [{"host": "127.0.0.1", "port": srv.port, "path": f"/webhook/{prod.product_id}",
                    "secret": prod.secret}]
            res = loadgen(ctx, tgt, rate, secs + warm)
            acks[label] = {"ok": res["ok"], "scheduled": res["scheduled"],
                           **summarize_ms(res["latencies_s"][int(rate * warm):])}
            if label == "push_on":
                pushed_res = res
        stats = _wait_sink(sink, pushed_res["ok"], timeout=60)
    finally:
        for server in (pusher, srv, sink):
            if server is not None:
                ctx.procs.stop(server.proc)
    cutoff = pushed_res["wall0"] + warm - 0.25 / rate
    lat = [arrival - ts for arrival, ts, _pos, _session in stats["samples"] if ts >= cutoff]
    expected = sum(1 for i in range(pushed_res["scheduled"])
                   if pushed_res["wall0"] + i / rate >= cutoff)
    return {
        "rate": rate, "seconds": secs, "delivered": len(lat), "expected": expected,
        "in_order_per_session": _in_order_per_session(stats["samples"]),
        "requests": stats["count"],
        **summarize_ms(lat),
        "ack": acks,
    }


def ingest_push(ctx: Ctx, conns: int = 64, rounds: int = 2) -> dict[str, Any]:
    """wrk, as fast as it goes, at a product without push and at one pushed to the sink, on the
    same receiver, alternately: what pushing costs ingest at saturation (same process, same
    cores)."""
    if ctx.smoke and shutil.which("wrk") is None:
        return {"skipped": "wrk is not installed"}
    rounds = 1 if ctx.smoke else rounds
    secs = ctx.seconds(5, 3)
    sink = start_sink(ctx)
    srv = start_receiver(ctx, 1)
    try:
        plain = make_product(srv, f"ingpush-off-{os.getpid()}")
        pushed = make_push_product(srv, f"ingpush-on-{os.getpid()}", sink)
        wrk(ctx, f"{srv.base}/webhook/{plain.product_id}", plain.secret, ctx.seconds(2, 1), conns)
        off, on = [], []
        for _ in range(rounds):
            off.append(wrk(ctx, f"{srv.base}/webhook/{plain.product_id}", plain.secret, secs, conns))
            on.append(wrk(ctx, f"{srv.base}/webhook/{pushed.product_id}", pushed.secret, secs,
                          conns))
        # Requests in flight when wrk stopped may still commit: count until it settles.
        deadline = time.monotonic() + 120
        while True:
            stored = asyncio.run(_count_events(ctx.db_url, pushed.product_id))
            stats = _wait_sink(sink, stored, timeout=max(1.0, deadline - time.monotonic()))
            settled = asyncio.run(_count_events(ctx.db_url, pushed.product_id)) == stored
            if (settled and len({s[2] for s in stats["samples"]}) >= stored) or (
                    time.monotonic() > deadline):
                break
    finally:
        ctx.procs.stop(srv.proc)
        ctx.procs.stop(sink.proc)
    out: dict[str, Any] = {"connections": conns, "rounds": rounds, "seconds": secs * rounds,
                           "push_off": _sum_wrk(off), "push_on": _sum_wrk(on)}
    out["ratio"] = round(out["push_on"]["ok_per_s"] / out["push_off"]["ok_per_s"], 3)
    out["pushed"] = {"stored": stored, "delivered": len({s[2] for s in stats["samples"]})}
    return out
