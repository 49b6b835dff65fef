"""Turn the scenario results into the printed table, the target checks and the PNG chart."""

from __future__ import annotations

from typing import Any


def g(d: dict[str, Any] | None, *path: str) -> Any:
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue #6: the measured value, the bound, and whether it is met."""
    out: list[dict[str, Any]] = []

    def add(name: str, value: Any, bound: float, op: str, unit: str) -> None:
        if value is None:
            return
        ok = value >= bound if op == ">=" else value <= bound
        out.append({"target": name, "value": value, "bound": f"{op} {bound:g} {unit}".strip(),
                    "met": bool(ok)})

    add("ingest / no-op ceiling (1 worker)", g(r, "ingest_w1", "ratio"), 0.60, ">=", "")
    add("ingest durable 200s/s (1 worker)", g(r, "ingest_w1", "receiver", "ok_per_s"), 3000, ">=", "ev/s")
    add("ack p99 at 1,000 ev/s", g(r, "ack_latency", "p99_ms"), 25, "<=", "ms")
    for k in ("e2e_1", "e2e_100"):
        n = g(r, k, "subscribers")
        add(f"e2e p50, {n} subscriber(s)", g(r, k, "p50_ms"), 10, "<=", "ms")
        add(f"e2e p99, {n} subscriber(s)", g(r, k, "p99_ms"), 50, "<=", "ms")
    for k in ("fanout_1000", "fanout_5000"):
        n = g(r, k, "subscribers")
        kib = g(r, k, "kib_per_subscriber")
        add(f"memory per subscriber at {n}", None if kib is None else round(kib * 1.024, 2),
            50, "<=", "KB")
        add(f"fan-out p99 at {n}", g(r, k, "p99_ms"), 100, "<=", "ms")
    add("replay 100k since=0", g(r, "replay", "events_per_s"), 50000, ">=", "ev/s")
    add("hostile request CPU, worst / normal event", g(r, "adversarial", "worst_cpu", "ratio"),
        50, "<=", "x")
    add("hostile request peak memory, 4 at once", g(r, "adversarial", "worst_peak_4x", "mib"),
        64, "<=", "MiB above idle")
    n = g(r, "live_activity", "events")
    if n:
        add(f"live-activity p99, {n:,} events, {g(r, 'live_activity', 'readers')} readers",
            g(r, "live_activity", "p99_ms"), 20, "<=", "ms")
    add("ingest with / without the live-activity index (HTTP, median of pairs)",
        g(r, "ingest_index_ab", "median_pair_ratio"), 0.95, ">=", "")
    add("store.append with / without the live-activity index (median of pairs)",
        g(r, "ingest_index_ab", "store_append", "median_ratio"), 0.95, ">=", "")
    return out


def _f(x: Any, nd: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def table(r: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str]] = [
        ("measurement", "receiver", "ceiling (same run)", "ratio / note")
    ]
    for w in (1, 2):
        d = r.get(f"ingest_w{w}")
        if d:
            rows.append((
                f"ingest, durable 200/s, {w} worker(s)", _f(g(d, "receiver", "ok_per_s")),
                f"{_f(g(d, 'ceiling', 'ok_per_s'))} (no-op FastAPI)", f"{_f(d.get('ratio'), 2)}",
            ))
    d = r.get("ingest_sync")
    if d and "receiver_sync" in d:
        rows.append((
            "ingest with a synchronous standby, 1 worker", _f(g(d, "receiver_sync", "ok_per_s")),
            f"{_f(g(d, 'ceiling', 'ok_per_s'))} (no-op FastAPI)",
            f"{_f(d.get('ratio'), 2)}; {_f(d.get('sync_vs_single'), 2)}x of no standby, side by side "
            f"({_f(g(d, 'receiver', 'ok_per_s'))}/s)",
        ))
    d = r.get("ack_latency")
    if d:
        rows.append(("ack latency @1,000/s p50/p99/p99.9 ms",
                     f"{_f(d['p50_ms'], 2)} / {_f(d['p99_ms'], 2)} / {_f(d['p999_ms'], 2)}", "-",
                     f"{d['ok']:,}/{d['scheduled']:,} ok"))
    for k in ("e2e_1", "e2e_100"):
        d = r.get(k)
        if d:
            rows.append((f"e2e POST→SDK callback, {d['subscribers']} sub(s) p50/p99 ms",
                         f"{_f(d['p50_ms'], 2)} / {_f(d['p99_ms'], 2)}", "-",
                         f"{d['delivered']:,}/{d['expected']:,} delivered"))
    for k, label in (("e2e_2r", "no standby"), ("e2e_2r_sync", "synchronous standby")):
        d = r.get(k)
        if d and "p50_ms" in d:
            rows.append((f"e2e across 2 receivers, {label}, p50/p99 ms",
                         f"{_f(d['p50_ms'], 2)} / {_f(d['p99_ms'], 2)}", "-",
                         f"{d['delivered']:,}/{d['expected']:,} delivered; "
                         f"barriers {_f(d.get('confirm_barriers'), 0)}"))
    for k in ("fanout_1000", "fanout_5000"):
        d = r.get(k)
        if d:
            after = g(d, "after_ack", "p99_ms")
            rows.append((f"fan-out {d['subscribers']:,} subs: KiB/sub, p50/p99 ms",
                         f"{_f(d['kib_per_subscriber'])} KiB, {_f(d['p50_ms'], 1)} / {_f(d['p99_ms'], 1)}",
                         "-", f"{d['delivered']:,}/{d['expected']:,} delivered; "
                              f"p99 after the 200: {_f(after, 1)} ms"))
    d = r.get("replay")
    if d:
        rows.append((f"replay {d['events']:,} events (since=0), ev/s", _f(d["events_per_s"]), "-",
                     "runs: " + ", ".join(_f(x["events_per_s"], 0) for x in d["runs"])))
    d = r.get("adversarial")
    if d and "error" not in d:
        rows.append(("normal posthog-js event, CPU ms/request", _f(d["normal_event_cpu_ms"], 3), "-",
                     "the baseline of the hostile rows"))
        for x in d["requests"]:
            peak = x.get("peak_mib_4x")
            rows.append((f"hostile: {x['name']} ({x['statuses']})", f"{_f(x['cpu_ms'], 2)} ms",
                         "-", f"{_f(x['cpu_ratio'], 1)}x normal"
                         + ("" if peak is None else f"; 4 at once +{_f(peak, 1)} MiB")))
        rows.append(("hostile: slowest /healthz meanwhile", f"{_f(d['healthz_max_ms'], 1)} ms", "-",
                     "unexpected statuses: " + (", ".join(d["unexpected_statuses"]) or "none")))
    d = r.get("live_activity")
    if d and "p50_ms" in d:
        sat = d.get("saturated") or {}
        rows.append((
            f"live activity, {d['events']:,} events, {d['readers']} readers @{_f(d['rate'], 0)}/s "
            "p50/p99/p99.9 ms",
            f"{_f(d['p50_ms'], 2)} / {_f(d['p99_ms'], 2)} / {_f(d['p999_ms'], 2)}", "-",
            f"{d['ok']:,}/{d['scheduled']:,} ok; saturated (wrk): {_f(sat.get('ok_per_s'))} reads/s, "
            f"p99 {_f((sat.get('lat_p99_us') or 0) / 1000, 1)} ms",
        ))
    d = r.get("ingest_index_ab")
    if d and "ratio" in d:
        rows.append((
            "ingest with / without the live-activity index, 200/s",
            f"{_f(g(d, 'with_index', 'ok_per_s'))} / {_f(g(d, 'without_index', 'ok_per_s'))}", "-",
            f"overall {_f(d['ratio'], 3)}, median of {d['rounds']} pairs "
            f"{_f(d.get('median_pair_ratio'), 3)}; table of {d['rows_in_table']:,} rows",
        ))
        sa = d.get("store_append") or {}
        if sa:
            rows.append((
                f"store.append batch {sa['batch']} with / without the index, rows/s",
                f"{_f(sa['with_index_rows_per_s'])} / {_f(sa['without_index_rows_per_s'])}", "-",
                f"median of {sa['bursts']} pair ratios: {_f(sa['median_ratio'], 3)}",
            ))
    d = r.get("push_throughput")
    if d and "payloads_per_s" in d:
        rows.append(("push throughput to a no-op endpoint, payloads/s", _f(d["payloads_per_s"]),
                     f"{_f(g(d, 'ceiling', 'posts_per_s'))} (httpx POSTs, one at a time)",
                     f"{_f(d.get('ratio'), 2)}; {d['delivered']:,}/{d['events']:,} delivered"))
    for layout, where in (("same_process", "push in the ingesting process"),
                          ("own_process", "push in its own process")):
        d = g(r, "push_latency", layout)
        if not d or "p50_ms" not in d:
            continue
        rows.append((f"push latency POST→endpoint @{d['rate']:,.0f}/s p50/p99 ms, {where}",
                     f"{_f(d['p50_ms'], 2)} / {_f(d['p99_ms'], 2)}", "-",
                     f"{d['delivered']:,}/{d['expected']:,} delivered"))
        on, off = g(d, "ack", "push_on"), g(d, "ack", "push_off")
        if on and off:
            rows.append((f"ack @{d['rate']:,.0f}/s p50/p99 ms, {where}",
                         f"{_f(on['p50_ms'], 2)} / {_f(on['p99_ms'], 2)}",
                         f"{_f(off['p50_ms'], 2)} / {_f(off['p99_ms'], 2)} (no push)", "-"))
    d = r.get("ingest_push")
    if d and "ratio" in d:
        rows.append(("ingest 200/s at saturation, push on (1 worker)",
                     _f(g(d, "push_on", "ok_per_s")),
                     f"{_f(g(d, 'push_off', 'ok_per_s'))} (push off, same run)",
                     f"{_f(d['ratio'], 2)}; pushed {d['pushed']['delivered']:,}/"
                     f"{d['pushed']['stored']:,}"))
    d = r.get("db")
    if d:
        w1 = g(r, "ingest_w1", "receiver", "ok_per_s")
        for key, label in (
            ("copy_batch_1000", "DB: COPY, 1,000 rows/commit"),
            ("copy_batch_100", "DB: COPY, 100 rows/commit"),
            ("insert_single_commit_1conn", "DB: INSERT, 1 row/commit, 1 conn"),
            ("insert_single_commit_64conn", "DB: INSERT, 1 row/commit, 64 conns"),
            ("store_append_batch_1", "DB: store.append, batch 1"),
            ("store_append_batch_16", "DB: store.append, batch 16"),
            ("store_append_batch_64", "DB: store.append, batch 64"),
            ("store_append_batch_1000", "DB: store.append, batch 1,000"),
        ):
            if key in d:
                note = f"HTTP ingest = {w1 / d[key]:.2f}x of this" if w1 else ""
                rows.append((label + ", rows/s", "-", _f(d[key]), note))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    t = targets(r)
    if t:
        lines.append("")
        lines.append("targets:")
        for x in t:
            lines.append(f"  [{'met' if x['met'] else 'MISSED'}] {x['target']}: {x['value']} ({x['bound']})")
    return "\n".join(lines)


def chart(r: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    fig.suptitle(
        f"autoplay receiver — make bench ({r.get('meta', {}).get('date', '')}, "
        f"{r.get('meta', {}).get('cpus', '?')} cores, Postgres fsync+synchronous_commit on)",
        fontsize=11,
    )

    ax = axes[0][0]
    labels, ceil, ours = [], [], []
    for w in (1, 2):
        d = r.get(f"ingest_w{w}")
        if d:
            labels.append(f"{w} worker{'s' if w > 1 else ''}")
            ceil.append(g(d, "ceiling", "ok_per_s") or 0)
            ours.append(g(d, "receiver", "ok_per_s") or 0)
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], ceil, 0.4, label="no-op FastAPI ceiling", color="#bbbbbb")
    ax.bar([i + 0.2 for i in x], ours, 0.4, label="receiver (durable 200s)", color="#1f77b4")
    for i, (c, o) in enumerate(zip(ceil, ours, strict=True)):
        label = f"{o:,.0f}\n{o / c:.0%}" if c else f"{o:,.0f}"
        ax.text(i + 0.2, o, label, ha="center", va="bottom", fontsize=8)
        ax.text(i - 0.2, c, f"{c:,.0f}", ha="center", va="bottom", fontsize=8)
    ax.axhline(3000, color="red", ls="--", lw=0.8, label="target 3,000/s")
    ax.set_xticks(list(x), labels)
    ax.set_ylabel("requests/s")
    ax.set_title("1/6 ingest: single-event POST /webhook (wrk)")
    ax.legend(fontsize=8)

    ax = axes[0][1]
    d = r.get("db") or {}
    items = [
        ("COPY 1000/commit", d.get("copy_batch_1000")),
        ("COPY 100/commit", d.get("copy_batch_100")),
        ("INSERT 1/commit, 64 conns", d.get("insert_single_commit_64conn")),
        ("INSERT 1/commit, 1 conn", d.get("insert_single_commit_1conn")),
        ("store.append b=1000", d.get("store_append_batch_1000")),
        ("store.append b=64", d.get("store_append_batch_64")),
        ("store.append b=16", d.get("store_append_batch_16")),
        ("store.append b=1", d.get("store_append_batch_1")),
        ("HTTP ingest (1 worker)", g(r, "ingest_w1", "receiver", "ok_per_s")),
        ("replay since=0 (ev/s)", g(r, "replay", "events_per_s")),
    ]
    items = [(k, v) for k, v in items if v]
    colors = ["#999999" if k.startswith(("COPY", "INSERT")) else "#1f77b4" for k, _ in items]
    ax.barh([k for k, _ in items], [v for _, v in items], color=colors)
    for i, (_k, v) in enumerate(items):
        ax.text(v, i, f" {v:,.0f}", va="center", fontsize=8)
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("rows or events per second (log)")
    ax.set_title("4/5 database ceiling (grey) vs our paths (blue)")

    ax = axes[1][0]
    lat = [
        ("ack p50", g(r, "ack_latency", "p50_ms"), None),
        ("ack p99", g(r, "ack_latency", "p99_ms"), 25),
        ("ack p99.9", g(r, "ack_latency", "p999_ms"), None),
        ("e2e 1 sub p50", g(r, "e2e_1", "p50_ms"), 10),
        ("e2e 1 sub p99", g(r, "e2e_1", "p99_ms"), 50),
        ("e2e 100 subs p50", g(r, "e2e_100", "p50_ms"), 10),
        ("e2e 100 subs p99", g(r, "e2e_100", "p99_ms"), 50),
        ("fan-out 1k p99", g(r, "fanout_1000", "p99_ms"), 100),
        ("fan-out 5k p99", g(r, "fanout_5000", "p99_ms"), 100),
    ]
    lat = [x for x in lat if x[1] is not None]
    ax.bar([k for k, _, _ in lat], [v for _, v, _ in lat],
           color=["#2ca02c" if t is None or v <= t else "#d62728" for _, v, t in lat])
    for i, (_k, v, t) in enumerate(lat):
        ax.text(i, v, f"{v:.1f}", ha="center", va="bottom", fontsize=8)
        if t is not None:
            ax.plot([i - 0.4, i + 0.4], [t, t], color="black", lw=1)
    ax.set_yscale("log")
    ax.set_ylabel("ms (log); black tick = target")
    ax.set_title("1-3 latency at 1,000 ev/s; fan-out of one event")
    ax.tick_params(axis="x", rotation=35, labelsize=8)

    ax = axes[1][1]
    mem = [
        (f"{g(r, k, 'subscribers'):,} subs", g(r, k, "kib_per_subscriber"))
        for k in ("fanout_1000", "fanout_5000")
        if g(r, k, "kib_per_subscriber") is not None
    ]
    ax.bar([k for k, _ in mem], [v for _, v in mem], color="#9467bd")
    for i, (_k, v) in enumerate(mem):
        ax.text(i, v, f"{v:.1f} KiB", ha="center", va="bottom", fontsize=9)
    ax.axhline(50 / 1.024, color="red", ls="--", lw=0.8, label="target 50 KB")
    ax.set_ylabel("receiver RSS growth per subscriber (KiB)")
    ax.set_title("3 fan-out memory (one receiver process)")
    ax.legend(fontsize=8)

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
