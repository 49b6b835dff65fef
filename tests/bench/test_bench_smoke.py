"""`make bench` end to end at toy sizes: every scenario runs, results.json and the chart are
written. It proves the harness works on a fresh machine; it asserts no timing."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_smoke(tmp_path: Path) -> None:
    scenarios = ["ack_latency", "e2e_1", "fanout_1000", "replay", "db", "e2e_2r_sync"]
    if shutil.which("wrk"):
        scenarios.insert(0, "ingest_w1")
    args = [sys.executable, "-m", "bench", "--smoke", "--only", ",".join(scenarios),
            "--out", str(tmp_path)]
    chart = importlib.util.find_spec("matplotlib") is not None
    if not chart:  # the bench extra is not part of `make test`
        args.append("--no-chart")
    res = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=170, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    results = json.loads((tmp_path / "results.json").read_text())
    assert results["meta"]["postgres"]["fsync"] == "on"
    assert results["meta"]["postgres"]["synchronous_commit"] == "on"
    ack = results["ack_latency"]
    assert ack["ok"] == ack["scheduled"] > 0 and ack["p99_ms"] > 0
    e2e = results["e2e_1"]
    assert e2e["delivered"] == e2e["expected"] > 0
    fan = results["fanout_1000"]
    assert fan["connected"] == 20 and fan["delivered"] == fan["expected"] == 20
    assert fan["kib_per_subscriber"] is not None
    assert results["replay"]["complete"] and results["replay"]["events"] == 500
    assert results["db"]["copy_batch_1000"] > 0 and results["db"]["store_append_batch_1"] > 0
    sync = results["e2e_2r_sync"]  # two receivers, a synchronous standby: confirmed by barriers
    assert sync["delivered"] == sync["expected"] > 0 and sync["confirm_barriers"] > 0
    if "ingest_w1" in scenarios:
        ing = results["ingest_w1"]
        # Every 200 is a stored row; requests in flight when wrk stops commit unacknowledged.
        rec = ing["receiver"]
        assert 0 < rec["ok"] <= rec["db_rows"] <= rec["ok"] + ing["connections"]
        assert ing["receiver"]["bad"] == 0
    assert "targets" in results and "measurement" in res.stdout
    if chart:
        assert (tmp_path / "results.png").stat().st_size > 10_000
