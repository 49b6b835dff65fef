"""What high availability costs (docs/high-availability.md, "Sizing").

* ``ingest_sync``: the ``ingest_w1`` measurement (wrk, one worker, against the no-op ceiling
  measured alternately) with a synchronous standby: every commit also waits for the standby's
  flush. Primary and standby run on this machine with fsync on, so the standby's round trip
  is a loopback one and its fsync competes for the same disk.
* ``e2e_2r`` / ``e2e_2r_sync``: two receivers on one database, events posted to the first,
  the stock SDK subscribed on the second, so every event reaches its subscriber through
  NOTIFY and a read from Postgres; with a synchronous standby that read must also be
  confirmed by the standby (the phantom guard, receiver.storage.replication) before it is
  streamed. ``e2e_2r`` is the same without a standby, the baseline.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import replace
from typing import Any

from bench import scenarios
from bench.common import PY, ROOT, summarize_ms


def _pair_url(pair: Any) -> str:
    return pair.uri  # both hosts, target_session_attrs=read-write, as an operator would write it


def ingest_sync(ctx: scenarios.Ctx) -> dict[str, Any]:
    from tests.ha.replicas import sync_pair

    with sync_pair(durable=True) as pair:
        out = scenarios.ingest(replace(ctx, db_url=_pair_url(pair)), 1)
        out["standby"] = "synchronous, same machine, fsync on"
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
