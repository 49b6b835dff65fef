"""What high availability costs (docs/high-availability.md, "Sizing").

* ``ingest_sync``: the ``ingest_w1`` measurement (wrk, one worker) on a receiver without a
  standby and on one whose every commit also waits for a synchronous standby's flush, measured
  alternately with the no-op ceiling. Primary and standby run on this machine with fsync on,
  so the standby's round trip is a loopback one and its fsync competes for the same disk.
* ``e2e_2r`` / ``e2e_2r_sync``: two receivers on one database, events posted to the first,
  the stock SDK subscribed on the second, so every event reaches its subscriber through
  NOTIFY and a read from Postgres; with a synchronous standby that read must also be
  confirmed by the standby (the phantom guard, receiver.storage.replication) before it is
  streamed. ``e2e_2r`` is the same without a standby, the baseline.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import replace
from typing import Any

from bench import scenarios
from bench.common import PY, ROOT, summarize_ms


def _pair_url(pair: Any) -> str:
    return pair.uri  # both hosts, target_session_attrs=read-write, as an operator would write it


def ingest_sync(ctx: scenarios.Ctx, conns: int = 64, rounds: int = 2) -> dict[str, Any]:
    """wrk against the no-op ceiling, a receiver without standby and one with a synchronous
    standby, alternately (ceiling, single, sync, ceiling, …): the machine is shared and its
    load drifts, so the cost of the standby is the ratio of sums measured side by side."""
    from tests.ha.replicas import sync_pair

    if ctx.smoke and shutil.which("wrk") is None:
        return {"skipped": "wrk is not installed"}
    rounds = 1 if ctx.smoke else rounds
    secs = ctx.seconds(5, 3)
    warm = ctx.seconds(2, 1)
    out: dict[str, Any] = {"workers": 1, "connections": conns, "seconds": secs * rounds,
                           "rounds": rounds, "standby": "synchronous, same machine, fsync on"}
    with sync_pair(durable=True) as pair:
        noop = scenarios.start_noop(ctx, 1)
        started: list[scenarios.Server] = []
        try:
            single = scenarios.start_receiver(ctx, 1)
            started.append(single)
            synced = scenarios.start_receiver(replace(ctx, db_url=_pair_url(pair)), 1)
            started.append(synced)
            urls = {"ceiling": (f"{noop.base}/webhook/noop", "x")}
            for name, srv in (("receiver", single), ("receiver_sync", synced)):
                warmup = scenarios.make_product(srv, f"warm-sync-{name}-{os.getpid()}")
                scenarios.wrk(ctx, f"{srv.base}/webhook/{warmup.product_id}", warmup.secret, warm, conns)
                prod = scenarios.make_product(srv, f"ingest-sync-{name}-{os.getpid()}")
                urls[name] = (f"{srv.base}/webhook/{prod.product_id}", prod.secret)
            runs: dict[str, list[dict[str, Any]]] = {k: [] for k in urls}
            for _ in range(rounds):
                for name, (url, secret) in urls.items():
                    runs[name].append(scenarios.wrk(ctx, url, secret, secs, conns))
            for name, r in runs.items():
                out[name] = scenarios._sum_wrk(r)
        finally:
            for srv in started:
                ctx.procs.stop(srv.proc)
            ctx.procs.stop(noop.proc)
    out["ratio"] = round(out["receiver_sync"]["ok_per_s"] / out["ceiling"]["ok_per_s"], 3)
    out["sync_vs_single"] = round(out["receiver_sync"]["ok_per_s"] / out["receiver"]["ok_per_s"], 3)
    return out


def e2e_two_receivers(ctx: scenarios.Ctx, *, sync: bool, rate: float = 1000) -> dict[str, Any]:
    if not sync:
        return _e2e_2r(ctx, ctx.db_url, rate)
    from tests.ha.replicas import sync_pair

    with sync_pair(durable=True) as pair:
        return _e2e_2r(replace(ctx, db_url=_pair_url(pair)), _pair_url(pair), rate) | {
            "standby": "synchronous, same machine, fsync on"
        }


def _e2e_2r(ctx: scenarios.Ctx, url: str, rate: float) -> dict[str, Any]:
    rate = 200 if ctx.smoke else rate
    secs = ctx.seconds(10, 3)
    warm = 1.0
    writer = scenarios.start_receiver(ctx, 1)
    reader = scenarios.start_receiver(ctx, 1)
    sub = None
    try:
        prod = scenarios.make_product(writer, f"e2e2r-{os.getpid()}-{int(time.time())}")
        sfile = ctx.work / f"subs-2r-{reader.port}.json"
        target = {"url": f"{reader.base}/stream/{prod.product_id}", "token": prod.token}
        sfile.write_text(json.dumps([target]))
        sout = ctx.work / f"subs-2r-{reader.port}-out.json"
        sub = ctx.procs.start(
            [PY, "-m", "bench.subscriber", "--targets", str(sfile), "--out", str(sout)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )
        scenarios._expect_ready(sub, 90)
        tgt = [{"host": "127.0.0.1", "port": writer.port, "path": f"/webhook/{prod.product_id}",
                "secret": prod.secret}]
        res = scenarios.loadgen(ctx, tgt, rate, secs + warm)
        time.sleep(1.0)  # let the last frames arrive
        assert sub.stdin is not None
        sub.stdin.write("DUMP\n")
        sub.stdin.flush()
        sub.wait(timeout=60)
        data = json.loads(sout.read_text())
        confirm = _confirm_counters(reader)
    finally:
        if sub is not None:
            ctx.procs.stop(sub)
        ctx.procs.stop(reader.proc)
        ctx.procs.stop(writer.proc)
    cutoff = res["wall0"] + warm - 0.25 / rate
    lat = [d for ts, d in data["samples"] if ts >= cutoff]
    expected = sum(1 for i in range(res["scheduled"]) if res["wall0"] + i / rate >= cutoff)
    return {
        "receivers": 2, "rate": rate, "seconds": secs, "posted_ok": res["ok"],
        "delivered": len(lat), "expected": expected, **summarize_ms(lat),
        "ack": summarize_ms(res["latencies_s"][int(rate * warm):]), **confirm,
    }


def _confirm_counters(srv: scenarios.Server) -> dict[str, float]:
    import httpx

    out: dict[str, float] = {}
    try:
        text = httpx.get(f"{srv.base}/metrics", timeout=5).text
    except httpx.HTTPError:
        return out
    for line in text.splitlines():
        for name in ("receiver_stream_confirm_barriers_total", "receiver_stream_confirm_refused_total"):
            if line.startswith(name + " "):
                out[name.removeprefix("receiver_stream_").removesuffix("_total")] = float(line.split()[1])
    return out


# --------------------------------------------------------------------------- the guide's tables


def _n(x: Any, nd: int = 0) -> str:
    if x is None:
        return "-"
    return f"{x:,.{nd}f}"


def sizing_table(r: dict[str, Any]) -> str:
    """The tables of docs/high-availability.md "Sizing", from a results.json of ``make bench``.

    tests/ha/test_docs_page.py checks the page shows exactly this for docs/bench/ha/results.json.
    """
    from bench.report import g

    meta = r.get("meta", {})
    w1 = g(r, "ingest_w1", "receiver", "ok_per_s")
    w2 = g(r, "ingest_w2", "receiver", "ok_per_s")
    single = g(r, "ingest_sync", "receiver", "ok_per_s")
    sync = g(r, "ingest_sync", "receiver_sync", "ok_per_s")
    loads = [x for v in r.values() if isinstance(v, dict) for x in v.get("loadavg_1m", []) if x is not None]
    db = r.get("db", {})
    fan = r.get("fanout_5000", {})
    rows = [
        ("events/s per receiver (1 worker: one core; Postgres on the same 2 cores)", _n(w1),
         "`ingest_w1`: wrk, 64 connections, one event per POST, durable 200s"),
        ("events/s, 2 workers", _n(w2), "`ingest_w2`"),
        ("primary, COPY, 1,000 rows per commit, rows/s", _n(db.get("copy_batch_1000")), "`db`"),
        ("primary, our transaction (`store.append`), 1,000 events per batch, rows/s",
         _n(db.get("store_append_batch_1000")), "`db`"),
        ("primary, our transaction, 64 events per batch, rows/s",
         _n(db.get("store_append_batch_64")), "`db`"),
        ("primary, our transaction, 1 event per batch, rows/s", _n(db.get("store_append_batch_1")), "`db`"),
        ("subscribers per process: memory per subscriber at 5,000, KiB", _n(fan.get("kib_per_subscriber"), 1),
         "`fanout_5000`"),
        ("subscribers per process: delivery p99 to 5,000 subscribers, ms", _n(fan.get("p99_ms"), 1),
         "`fanout_5000`"),
        ("replay from Postgres (`?since=0`), events/s per subscriber", _n(g(r, "replay", "events_per_s")),
         "`replay`"),
    ]
    e2e, e2s = r.get("e2e_2r", {}), r.get("e2e_2r_sync", {})
    per_event = (e2s.get("confirm_barriers") or 0) / e2s["delivered"] if e2s.get("delivered") else None
    ha_rows = [
        ("events/s per receiver, 1 worker (measured side by side)", _n(single), _n(sync),
         f"{sync / single:.2f}x" if single and sync else "-"),
        ("POST → 200 at 1,000 events/s, p50 ms", _n(g(e2e, "ack", "p50_ms"), 2),
         _n(g(e2s, "ack", "p50_ms"), 2), "the commit waits for the standby's flush"),
        ("POST → SDK callback across 2 receivers, p50 ms", _n(e2e.get("p50_ms"), 2),
         _n(e2s.get("p50_ms"), 2), "NOTIFY, read, barrier"),
        ("POST → SDK callback across 2 receivers, p99 ms", _n(e2e.get("p99_ms"), 2),
         _n(e2s.get("p99_ms"), 2), ""),
        ("barriers per event streamed (1,000 events/s)", "0", _n(per_event, 2),
         "one in flight per receiver, shared by all reads"),
    ]
    lines = [
        f"Measured by `make bench` on {meta.get('date', '?')} (commit {meta.get('git', '?')}, "
        f"{meta.get('cpus', '?')} cores, {meta.get('cpu_model', '?')}, Postgres "
        f"{g(meta, 'postgres', 'server_version') or '?'} with fsync and synchronous_commit on). "
        "The machine was shared with other work: 1-minute load average "
        f"{_n(min(loads, default=None), 1)} to {_n(max(loads, default=None), 1)} during the run "
        "(recorded beside each figure in the file), so compare figures measured side by side.",
        "",
        "| Capacity | Measured | Scenario |",
        "| --- | --- | --- |",
        *(f"| {a} | {b} | {c} |" for a, b, c in rows),
        "",
        "| What high availability costs | No standby | Synchronous standby | |",
        "| --- | --- | --- | --- |",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in ha_rows),
    ]
    return "\n".join(lines) + "\n"
