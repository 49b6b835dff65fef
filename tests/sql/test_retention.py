"""Partition maintenance and retention against real Postgres (receiver.storage.retention)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from receiver.storage import retention, store
from receiver.storage.retention import Policy, partition_name
from tests.sql.seed import add, connect, seed_story

NOW = datetime.now(UTC)
TODAY = NOW.date()


@pytest.fixture(autouse=True)
def _clock() -> None:
    """Each test's "now", not the import's: a full suite imports this module minutes earlier
    (and may cross midnight UTC in between, moving every daily partition by one)."""
    global NOW, TODAY
    NOW = datetime.now(UTC)
    TODAY = NOW.date()


def days_ago(n: float) -> datetime:
    return NOW - timedelta(days=n)


async def snapshot(conn: asyncpg.Connection) -> list[tuple[Any, ...]]:
    rows = await conn.fetch("SELECT *, payload::text AS payload FROM events ORDER BY product_id, position")
    return [tuple(r) for r in rows]


async def part_of(conn: asyncpg.Connection) -> dict[tuple[str, int], str]:
    rows = await conn.fetch("SELECT product_id, position, tableoid::regclass::text AS part FROM events")
    return {(r["product_id"], r["position"]): r["part"] for r in rows}


async def stream_positions(conn: asyncpg.Connection, product: str, page: int = 2) -> list[int]:
    got: list[int] = []
    cursor = 0
    while rows := await store.read_after(conn, product, cursor, page):
        got += [r.position for r in rows]
        cursor = rows[-1].position
    return got


def run(coro_fn: Callable[[asyncpg.Connection], Any], url: str) -> Any:
    async def main() -> Any:
        conn = await connect(url)
        try:
            return await coro_fn(conn)
        finally:
            await conn.close()

    return asyncio.run(main())


def test_maintenance_creates_partitions_ahead_and_empties_the_default(database_url: str) -> None:
    asyncio.run(seed_story(database_url))

    async def scenario(conn: asyncpg.Connection) -> None:
        before = await snapshot(conn)
        parts = await part_of(conn)
        in_default = sum(1 for p in parts.values() if p == "events_default")
        assert in_default > 0  # the story's past days had no partition yet

        report = await retention.maintain(conn, Policy(retention_days=30))
        assert report.moved_from_default == in_default
        for back in (1, 2):
            assert partition_name(TODAY - timedelta(days=back)) in report.created
        assert await conn.fetchval("SELECT count(*) FROM events_default") == 0
        assert await snapshot(conn) == before  # nothing lost or changed by the move
        have = await retention.partitions(conn)
        for ahead in range(4):
            assert partition_name(TODAY + timedelta(days=ahead)) in have
        # Later, maintenance keeps the window moving.
        later = await retention.maintain(conn, Policy(retention_days=30), now=NOW + timedelta(days=10))
        assert partition_name(TODAY + timedelta(days=13)) in later.created
        assert later.dropped == []
        # Streams still read every position in order, across partitions.
        positions = [r[1] for r in before if r[0] == "acme"]
        assert await stream_positions(conn, "acme") == positions

    run(scenario, database_url)


def test_an_insert_outside_every_partition_lands_in_default_and_is_moved(database_url: str) -> None:
    async def scenario(conn: asyncpg.Connection) -> None:
        far = NOW + timedelta(days=20)
        out = await add(conn, "p", far)
        assert (await part_of(conn))[("p", out.position)] == "events_default"
        report = await retention.maintain(conn, Policy(), now=NOW)
        assert report.moved_from_default == 1
        assert (await part_of(conn))[("p", out.position)] == partition_name(far.date())

    run(scenario, database_url)


def test_old_partitions_are_dropped_whole_and_streams_continue(database_url: str) -> None:
    async def scenario(conn: asyncpg.Connection) -> None:
        for back in (40, 35, 10):
            await retention.create_partition(conn, (NOW - timedelta(days=back)).date())
        await add(conn, "p", days_ago(50))  # no partition: stays in the default partition
        for back in (40, 35, 10, 0):
            await add(conn, "p", days_ago(back), session=f"s{back}")
        await add(conn, "q", days_ago(40))
        assert await stream_positions(conn, "p") == [1, 2, 3, 4, 5]

        report = await retention.maintain(conn, Policy(retention_days=30))
        dropped = {partition_name((NOW - timedelta(days=b)).date()) for b in (40, 35)}
        assert dropped <= set(report.dropped)
        assert partition_name((NOW - timedelta(days=10)).date()) not in report.dropped
        left = await conn.fetch("SELECT product_id, position FROM events ORDER BY 1, 2")
        assert [tuple(r) for r in left] == [("p", 4), ("p", 5)]
        # Dedup keys older than the retention went with them.
        assert await conn.fetchval("SELECT count(*) FROM event_keys") == 2
        assert report.keys_pruned == 4

        # The stream: positions are unchanged, replay starts at the oldest kept event.
        assert await stream_positions(conn, "p") == [4, 5]
        assert await store.read_range(conn, "p", 0, 5) == await store.read_after(conn, "p", 0, 10)
        assert await store.position_before(conn, "p", days_ago(60)) == 3
        assert await store.position_before(conn, "p", days_ago(5)) == 4
        # And new events continue after the head.
        new = await add(conn, "p", NOW)
        assert new.position == 6
        assert await stream_positions(conn, "p") == [4, 5, 6]

    run(scenario, database_url)


def test_per_product_shorter_retention_deletes_rows(database_url: str) -> None:
    async def scenario(conn: asyncpg.Connection) -> None:
        await retention.create_partition(conn, (NOW - timedelta(days=10)).date())
        for product in ("short", "normal"):
            await add(conn, product, days_ago(10))
            await add(conn, product, days_ago(0.01))
        await conn.execute("UPDATE products SET retention_days = 5 WHERE product_id = 'short'")
        report = await retention.maintain(conn, Policy(retention_days=30))
        assert report.deleted == {"short": 1}
        assert report.dropped == []
        left = await conn.fetch("SELECT product_id, position FROM events ORDER BY 1, 2")
        assert [tuple(r) for r in left] == [("normal", 1), ("normal", 2), ("short", 2)]
        assert await stream_positions(conn, "short") == [2]
        # Idempotent.
        again = await retention.maintain(conn, Policy(retention_days=30))
        assert again.deleted == {} and again.dropped == [] and again.created == []

    run(scenario, database_url)


def test_a_longer_product_retention_keeps_partitions_and_trims_the_others(database_url: str) -> None:
    async def scenario(conn: asyncpg.Connection) -> None:
        day40 = (NOW - timedelta(days=40)).date()
        await retention.create_partition(conn, day40)
        for product in ("long", "normal"):
            await add(conn, product, days_ago(40))
        await conn.execute("UPDATE products SET retention_days = 60 WHERE product_id = 'long'")
        report = await retention.maintain(conn, Policy(retention_days=30))
        assert report.dropped == []
        assert report.deleted == {"normal": 1}
        assert [tuple(r) for r in await conn.fetch("SELECT product_id FROM events")] == [("long",)]
        # With no product past 30 days any more, the partition goes at the next run.
        await conn.execute("UPDATE products SET retention_days = NULL WHERE product_id = 'long'")
        report = await retention.maintain(conn, Policy(retention_days=30))
        assert report.dropped == [partition_name(day40)]

    run(scenario, database_url)


def test_retention_zero_keeps_everything(database_url: str) -> None:
    async def scenario(conn: asyncpg.Connection) -> None:
        await retention.create_partition(conn, (NOW - timedelta(days=400)).date())
        await add(conn, "p", days_ago(400))
        report = await retention.maintain(conn, Policy(retention_days=0))
        assert report.dropped == [] and report.deleted == {} and report.keys_pruned == 0
        assert await conn.fetchval("SELECT count(*) FROM events") == 1
        # One product keeping forever also stops the drop; the others are trimmed row by row.
        await add(conn, "q", days_ago(400))
        await conn.execute("UPDATE products SET retention_days = 0 WHERE product_id = 'p'")
        report = await retention.maintain(conn, Policy(retention_days=30))
        assert report.dropped == [] and report.deleted == {"q": 1}

    run(scenario, database_url)


def test_payload_retention_clears_only_the_payload(database_url: str) -> None:
    async def scenario(conn: asyncpg.Connection) -> None:
        for back in (10, 8):
            await retention.create_partition(conn, (NOW - timedelta(days=back)).date())
        for product in ("p", "keep"):
            for back in (10, 8, 0.01):
                await add(conn, product, days_ago(back), text="x")
        # A per-product 0 keeps payloads as long as the events, whatever the global says.
        await conn.execute("UPDATE products SET payload_retention_days = 0 WHERE product_id = 'keep'")
        cols = "product_id, position, received_at, occurred_at, event, distinct_id, email, current_url, title"
        typed = await conn.fetch(f"SELECT {cols} FROM events ORDER BY 1, 2")  # noqa: S608

        # Bracket the maintenance run itself: it reads the clock a moment after NOW was taken.
        before = datetime.now(UTC)
        report = await retention.maintain(conn, Policy(retention_days=30, payload_retention_days=7))
        after = datetime.now(UTC)
        assert report.payloads_cleared == {"p": 2}
        rows = await conn.fetch(
            "SELECT product_id, position, payload IS NULL AS gone FROM events ORDER BY 1, 2"
        )
        assert [tuple(r) for r in rows] == [
            ("keep", 1, False), ("keep", 2, False), ("keep", 3, False),
            ("p", 1, True), ("p", 2, True), ("p", 3, False),
        ]
        assert await conn.fetch(f"SELECT {cols} FROM events ORDER BY 1, 2") == typed  # noqa: S608
        mark = await conn.fetchval(
            "SELECT payload_cleared_before FROM retention_state WHERE product_id = 'p'"
        )
        slack = timedelta(seconds=1)  # the database's clock against ours
        assert before - timedelta(days=7) - slack <= mark <= after - timedelta(days=7) + slack
        again = await retention.maintain(conn, Policy(retention_days=30, payload_retention_days=7))
        assert again.payloads_cleared == {}
        # The stream frames never carried the payload; they still read fine.
        assert await stream_positions(conn, "p") == [1, 2, 3]

    run(scenario, database_url)


def test_concurrent_maintenance_runs_skip(database_url: str) -> None:
    async def scenario(conn: asyncpg.Connection) -> None:
        other = await connect(database_url)
        try:
            await other.execute("SELECT pg_advisory_lock($1)", retention.ADVISORY_KEY)
            assert (await retention.maintain(conn, Policy())).skipped
            await other.execute("SELECT pg_advisory_unlock($1)", retention.ADVISORY_KEY)
            assert not (await retention.maintain(conn, Policy())).skipped
        finally:
            await other.close()

    run(scenario, database_url)


def _plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    out = [plan]
    for child in plan.get("Plans", []):
        out += _plan_nodes(child)
    return out


def test_stream_reads_stay_index_driven_across_partitions(database_url: str) -> None:
    async def scenario(conn: asyncpg.Connection) -> None:
        days = [(NOW - timedelta(days=b)).date() for b in range(1, 6)]
        for day in days:
            await retention.create_partition(conn, day)
        await conn.execute(
            "INSERT INTO products (product_id, contact_email, capture_token) VALUES "
            "('big', 'o@example.com', 'tb'), ('other', 'o@example.com', 'to')"
        )
        # 60,000 events for two products over five days (positions rise with time).
        await conn.execute(
            """
            INSERT INTO events (product_id, position, received_at, occurred_at, source, event,
                                action_type, dedup_key, title, description, session_index)
            SELECT CASE WHEN g % 2 = 0 THEN 'big' ELSE 'other' END, (g + 1) / 2,
                   $1::timestamptz + (g * interval '7 seconds'),
                   $1::timestamptz + (g * interval '7 seconds'),
                   'webhook', '$pageview', 'pageview', 'h:' || g, 't', 'd', 0
            FROM generate_series(1, 60000) g
            """,
            datetime(days[-1].year, days[-1].month, days[-1].day, tzinfo=UTC),
        )
        await conn.execute("ANALYZE events")
        # Today's partition fills up after the last ANALYZE, as it does under live ingest.
        await conn.execute(
            """
            INSERT INTO events (product_id, position, received_at, occurred_at, source, event,
                                action_type, dedup_key, title, description, session_index)
            SELECT 'big', 30000 + g, now() - interval '1 minute', now(), 'webhook', '$pageview',
                   'pageview', 'n:' || g, 't', 'd', 0
            FROM generate_series(1, 5000) g
            """
        )
        sizes = {
            r["part"]: r["n"]
            for r in await conn.fetch(
                "SELECT tableoid::regclass::text AS part, count(*) AS n FROM events GROUP BY 1"
            )
        }
        queries = {
            "read_after": (
                store.STREAM_SELECT + " WHERE product_id = $1 AND position > $2 ORDER BY position LIMIT $3",
                "text, bigint, int", "'big', 12000, 500",
            ),
            "read_range": (
                store.STREAM_SELECT
                + " WHERE product_id = $1 AND position > $2 AND position <= $3 ORDER BY position",
                "text, bigint, bigint", "'big', 12000, 12500",
            ),
            "position_before": (
                "SELECT min(position) - 1 FROM events WHERE product_id = $1 AND received_at >= $2",
                "text, timestamptz", f"'big', '{(NOW - timedelta(hours=30)).isoformat()}'",
            ),
        }
        # asyncpg prepares statements, so the generic plan matters as much as the custom one.
        for mode in ("force_custom_plan", "force_generic_plan"):
            await conn.execute(f"SET plan_cache_mode = {mode}")
            for name, (sql, types, args) in queries.items():
                await conn.execute(f"PREPARE q_{name} ({types}) AS {sql}")
                plan = json.loads(await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE q_{name} ({args})"))
                await conn.execute(f"DEALLOCATE q_{name}")
                nodes = _plan_nodes(plan[0]["Plan"])
                kinds = {n["Node Type"] for n in nodes}
                # The planner may seq-scan an empty partition (the days ahead); never one with rows.
                seq = {n["Relation Name"] for n in nodes if n["Node Type"] == "Seq Scan"}
                assert not {p for p in seq if sizes.get(p)}, (name, mode, seq)
                assert kinds & {"Index Scan", "Index Only Scan"}, (name, mode, kinds)
                used = {n.get("Index Name") for n in nodes if n.get("Index Name")}
                if name == "position_before":
                    # Partitions before the cutoff's day are pruned (at plan or executor start).
                    scanned = {n["Relation Name"] for n in nodes if n.get("Relation Name")}
                    first = partition_name((NOW - timedelta(hours=30)).date())
                    assert scanned and all(
                        p == "events_default" or p >= first for p in scanned
                    ), (mode, scanned)
                else:
                    assert all(i.endswith("_pkey") for i in used), (name, used)
        # Results are right, too.
        rows = await store.read_after(conn, "big", 12_000, 500)
        assert [r.position for r in rows] == list(range(12_001, 12_501))
        rows = await store.read_after(conn, "big", 30_000, 10)
        assert [r.position for r in rows] == list(range(30_001, 30_011))

    run(scenario, database_url)


def test_the_receiver_runs_maintenance_in_the_background(
    database_url: str, receiver_factory: Callable[..., Any]
) -> None:
    ahead = partition_name(TODAY + timedelta(days=3))

    async def drop(conn: asyncpg.Connection) -> None:
        await conn.execute(f"DROP TABLE IF EXISTS {ahead}")

    async def exists(conn: asyncpg.Connection) -> bool:
        return ahead in await retention.partitions(conn)

    run(drop, database_url)
    live = receiver_factory(maintenance_seconds=0)
    assert live.runtime.maintenance is None
    live.stop()
    assert not run(exists, database_url)

    live = receiver_factory(maintenance_seconds=3600)  # runs once at start
    deadline = time.monotonic() + 15
    while not run(exists, database_url):
        assert time.monotonic() < deadline, "maintenance did not run at start"
        time.sleep(0.1)
    task = live.runtime.maintenance
    assert task is not None and not task.done()
    live.stop()
    assert task.done()


@pytest.mark.timeout(60)
def test_sse_replay_across_partitions(receiver: Any, make_product: Callable[..., Any]) -> None:
    product = make_product()
    url = receiver.settings.database_url_str()

    async def seed(conn: asyncpg.Connection) -> list[int]:
        positions = []
        for back in (3, 2, 1, 0):
            if back:
                await retention.create_partition(conn, (NOW - timedelta(days=back)).date())
            for i in range(2):
                out = await add(
                    conn, product.product_id, days_ago(back) - timedelta(minutes=i),
                    session=f"s{back}", kind="click", text=f"Button {back}{i}", user=f"u{back}",
                )
                positions.append(out.position)
        parts = await part_of(conn)
        assert len({parts[(product.product_id, p)] for p in positions}) == 4
        return positions

    positions = run(seed, url)
    assert positions == list(range(1, 9))

    def ids(query: str, want: int) -> list[int]:
        got: list[int] = []
        headers = {"Authorization": f"Bearer {product.stream_key}"}
        with httpx.stream("GET", f"{product.stream_url}?{query}", headers=headers, timeout=10) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("id: "):
                    got.append(int(line[4:]))
                    if len(got) == want:
                        break
        return got

    assert ids("since=0", 8) == positions
    assert ids("since=5", 3) == [6, 7, 8]
    # replay=<seconds> finds its start with position_before across partitions.
    assert ids(f"replay={int(timedelta(days=1, hours=12).total_seconds())}", 4) == [5, 6, 7, 8]


def test_counters_of_idle_sessions_are_pruned_after_the_retention(database_url: str) -> None:
    async def scenario(conn: asyncpg.Connection) -> None:
        for session in ("old", "edge", "recent"):
            await add(conn, "p", NOW, session=session)
        await add(conn, "forever", NOW, session="old")
        await conn.execute("UPDATE products SET retention_days = 0 WHERE product_id = 'forever'")
        # Sessions last seen 33, 31 and 1 day(s) ago; retention 30 days + a 2-day margin.
        for session, back in (("old", 33), ("edge", 31), ("recent", 1)):
            await conn.execute(
                "UPDATE session_counters SET last_seen_at = $1 "
                "WHERE product_id = 'p' AND session_id = $2", days_ago(back), session,
            )
        await conn.execute(
            "UPDATE session_counters SET last_seen_at = $1 WHERE product_id = 'forever'",
            days_ago(400),
        )
        report = await retention.maintain(conn, Policy(retention_days=30))
        assert report.sessions_pruned == 1
        assert report.as_dict()["sessions_pruned"] == 1
        left = {tuple(r) for r in await conn.fetch("SELECT product_id, session_id FROM session_counters")}
        assert left == {("p", "edge"), ("p", "recent"), ("forever", "old")}  # 0 = keep forever
        # A pruned session that comes back starts at 0 again; a kept one continues.
        assert (await add(conn, "p", NOW, session="old")).session_index == 0
        assert (await add(conn, "p", NOW, session="edge")).session_index == 1
        # And it is seen again: the next run keeps it.
        again = await retention.maintain(conn, Policy(retention_days=30))
        assert again.sessions_pruned == 0

    run(scenario, database_url)
