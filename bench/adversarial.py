"""``make bench`` scenario ``adversarial``: CPU and peak memory per request over the hostile
corpus of ``tests/security/adversarial.py``, beside one normal posthog-js event's.

* CPU: the receiver process's own CPU time (every thread, from ``/proc/<pid>/task/*/schedstat``,
  nanoseconds) around each request sent alone, averaged over repetitions; every repetition
  uses fresh event uuids, so accepted requests are stored again, never deduplicated. The
  normal event is measured the same way, in the same process, in the same run.
* Memory: for each request, a fresh receiver warmed with normal events; its peak RSS is reset
  (``/proc/<pid>/clear_refs``), four copies of the request are sent at once, and the new peak
  (``VmHWM``) minus the RSS just before is the request's "4 at once" figure. Meanwhile
  ``/healthz`` is probed and its slowest answer recorded.

Targets (issue 14): worst CPU ≤ 50× the normal event's; peak ≤ 64 MiB above idle for 4 at once.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.scenarios import Ctx, Server, start_receiver
from tests.security.adversarial import Hostile, corpus, normal_event_body

CPU_RATIO_TARGET = 50.0
PEAK_MIB_TARGET = 64.0


def cpu_ns(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            pass
    return total


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} for {pid}")


def _register(srv: Server) -> dict[str, Any]:
    r = httpx.post(f"{srv.base}/products", timeout=10,
                   json={"product_id": "adversarial", "contact_email": "bench@example.com",
                         "force_reregister": True})
    r.raise_for_status()
    return dict(r.json())


def _send(client: httpx.Client, srv: Server, prod: dict[str, Any], h: Hostile | None,
          body: bytes | None = None) -> int:
    if h is None or h.route == "capture":
        url = f"{srv.base}/e/"
        headers = {"content-type": h.content_type if h else "text/plain"}
    else:
        url = f"{srv.base}/webhook/{prod['product_id']}"
        headers = {"content-type": h.content_type, "x-posthog-secret": prod["webhook_secret"]}
    r = client.post(url, content=body if body is not None else h.body, headers=headers)  # type: ignore[union-attr]
    return r.status_code


def _salted(token: str, salt: str) -> dict[str, Hostile]:
    return {h.name: h for h in corpus(token, salt=salt)}


def adversarial(ctx: Ctx) -> dict[str, Any]:
    reps = 1 if ctx.smoke else 2 if ctx.quick else 5
    normal_reps = 20 if ctx.smoke else 100 if ctx.quick else 300
    srv = start_receiver(ctx)
    try:
        prod = _register(srv)
        token = prod["capture_token"]
        pid = srv.proc.pid
        names = [h.name for h in corpus(token)]
        bodies = [_salted(token, f"r{i}") for i in range(reps)]
        normals = [normal_event_body(token, salt=f"n{i}") for i in range(normal_reps + 20)]
        with httpx.Client(timeout=120) as client:
            for body in normals[:20]:  # warm: imports, caches, the pool
                assert _send(client, srv, prod, None, body) == 200
            t0 = cpu_ns(pid)
            for body in normals[20:]:
                assert _send(client, srv, prod, None, body) == 200
            normal_ms = (cpu_ns(pid) - t0) / normal_reps / 1e6
            rows: list[dict[str, Any]] = []
            for name in names:
                statuses: set[int] = set()
                t0 = cpu_ns(pid)
                for rep in range(reps):
                    statuses.add(_send(client, srv, prod, bodies[rep][name]))
                ms = (cpu_ns(pid) - t0) / reps / 1e6
                h = bodies[0][name]
                rows.append({
                    "name": name, "route": h.route, "bytes": len(h.body), "decoded": h.decoded_size,
                    "statuses": sorted(statuses), "expected": sorted(h.expect),
                    "cpu_ms": round(ms, 3), "cpu_ratio": round(ms / normal_ms, 1),
                })
    finally:
        ctx.procs.stop(srv.proc)

    memory_names = names[:3] if ctx.smoke else names
    by_name = {r["name"]: r for r in rows}
    for name in memory_names:
        by_name[name].update(_four_at_once(ctx, name))
    worst_cpu = max(rows, key=lambda r: r["cpu_ms"])
    measured = [r for r in rows if "peak_mib_4x" in r]
    worst_mem = max(measured, key=lambda r: r["peak_mib_4x"])
    return {
        "normal_event_cpu_ms": round(normal_ms, 3),
        "repetitions": reps,
        "requests": rows,
        "worst_cpu": {"name": worst_cpu["name"], "cpu_ms": worst_cpu["cpu_ms"],
                      "ratio": worst_cpu["cpu_ratio"]},
        "worst_peak_4x": {"name": worst_mem["name"], "mib": worst_mem["peak_mib_4x"]},
        "healthz_max_ms": max(r.get("healthz_max_ms", 0.0) for r in rows),
        "unexpected_statuses": [r["name"] for r in rows if not set(r["statuses"]) <= set(r["expected"])],
    }


def _four_at_once(ctx: Ctx, name: str) -> dict[str, Any]:
    srv = start_receiver(ctx)
    try:
        prod = _register(srv)
        token = prod["capture_token"]
        pid = srv.proc.pid
        copies = [_salted(token, f"m{i}")[name] for i in range(4)]
        with httpx.Client(timeout=120) as client:
            for i in range(20):
                assert _send(client, srv, prod, None, normal_event_body(token, salt=f"w{i}")) == 200
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        idle_kib = _status_kib(pid, "VmRSS")
        done = threading.Event()
        slowest = [0.0]

        def probe() -> None:
            with httpx.Client(timeout=30) as c:
                while not done.is_set():
                    t = time.perf_counter()
                    c.get(f"{srv.base}/healthz")
                    slowest[0] = max(slowest[0], time.perf_counter() - t)
                    done.wait(0.01)

        prober = threading.Thread(target=probe)
        prober.start()
        try:
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                def one(h: Hostile) -> int:
                    with httpx.Client(timeout=120) as c:
                        return _send(c, srv, prod, h)
                statuses = list(pool.map(one, copies))
        finally:
            done.set()
            prober.join()
        peak_kib = _status_kib(pid, "VmHWM")
        return {"peak_mib_4x": round((peak_kib - idle_kib) / 1024, 1), "statuses_4x": statuses,
                "idle_rss_mib": round(idle_kib / 1024, 1),
                "healthz_max_ms": round(slowest[0] * 1000, 1)}
    finally:
        ctx.procs.stop(srv.proc)
