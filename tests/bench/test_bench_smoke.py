"""`make bench` end to end at toy sizes: every scenario runs, results.json and the chart are
written. It proves the harness works on a fresh machine; it asserts no timing."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
def test_bench_smoke(tmp_path: Path) -> None:
    scenarios = ["ack_latency", "e2e_1", "fanout_1000", "replay", "db", "adversarial", "live_activity",
                 "push_throughput", "push_latency", "e2e_2r_sync"]
    if shutil.which("wrk"):
        scenarios[:0] = ["ingest_w1", "ingest_push"]
        scenarios.append("ingest_index_ab")
    args = [sys.executable, "-m", "bench", "--smoke", "--only", ",".join(scenarios),
            "--out", str(tmp_path)]
    chart = importlib.util.find_spec("matplotlib") is not None
    if not chart:  # the bench extra is not part of `make test`
        args.append("--no-chart")
    res = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
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
    adv = results["adversarial"]
    assert adv["unexpected_statuses"] == [] and adv["normal_event_cpu_ms"] > 0
    assert len(adv["requests"]) >= 20 and adv["worst_peak_4x"]["mib"] is not None
    live = results["live_activity"]
    assert live["events_in_table"] >= live["events"] == 2000
    assert live["ok"] == live["scheduled"] > 0 and live["p99_ms"] > 0
    # Every answer holds all of the user's visible rows (all inside the window), internal ones never.
    assert set(live["actions_per_answer"]) == {str(live["expected_per_answer"])}
    # The partitions' copies of ix_events_live_activity: named by migration 0005 for partitions that
    # existed then (…_live_activity), by Postgres for later ones (…_product_id_distinct_id_idx).
    assert any("Index Scan" in line and ("_live_activity" in line or "product_id_distinct_id" in line)
               for line in live["plan"]), live["plan"]
    if "ingest_index_ab" in scenarios:
        ab = results["ingest_index_ab"]
        assert ab["with_index"]["ok"] > 0 and ab["without_index"]["ok"] > 0 and ab["ratio"] > 0
        assert ab["store_append"]["median_ratio"] > 0
    push = results["push_throughput"]
    assert push["delivered"] == push["events"] == 300 and push["in_order_per_session"]
    assert push["payloads_per_s"] > 0 and push["ceiling"]["posts_per_s"] > 0
    for layout in ("same_process", "own_process"):
        lat = results["push_latency"][layout]
        assert lat["delivered"] == lat["expected"] > 0 and lat["in_order_per_session"]
        assert lat["p99_ms"] > 0
        assert lat["ack"]["push_on"]["ok"] == lat["ack"]["push_on"]["scheduled"] > 0
    if "ingest_push" in scenarios:
        ip = results["ingest_push"]
        assert ip["push_on"]["bad"] == ip["push_off"]["bad"] == 0 and ip["ratio"] > 0
        # Everything stored for the pushed product was pushed by the end of the scenario.
        assert ip["pushed"]["delivered"] == ip["pushed"]["stored"] > 0
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
