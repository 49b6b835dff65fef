"""Migration 0005 on a database with events: the live-activity index is built on every partition
(concurrently, then attached), valid, and used; earlier products keep working; it goes back down."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg

from receiver.storage import migrate, store
from tests.sql.test_migrations import fetch, seed_0001


def _indexes(url: str) -> list[dict[str, object]]:
    rows = asyncio.run(fetch(url, """
        SELECT c.relname AS index, t.relname AS tbl, i.indisvalid AS valid,
               pg_get_indexdef(i.indexrelid) AS def,
               (SELECT p.relname FROM pg_inherits h JOIN pg_class p ON p.oid = h.inhparent
                WHERE h.inhrelid = i.indexrelid) AS parent
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
        WHERE pg_get_indexdef(i.indexrelid) LIKE '%(product_id, distinct_id) WHERE%'
        ORDER BY 2
    """))
    return [dict(r) for r in rows]


async def _plan(url: str) -> str:
    conn = await asyncpg.connect(store.asyncpg_dsn(url))
    try:
        await conn.execute("SET enable_seqscan = off")  # a few rows: otherwise a scan is cheaper
        rows = await conn.fetch(
            # Without the ORDER BY ... LIMIT: on a few rows, the primary key read backwards (no
            # sort) is as cheap, so it would say nothing about this index.
            "EXPLAIN SELECT * FROM events WHERE product_id = 'alpha' AND distinct_id = 'user-1' "
            "AND action_type <> 'internal'"
        )
    finally:
        await conn.close()
    return "\n".join(r[0] for r in rows)


def test_0005_indexes_every_partition_and_keeps_the_data(empty_database_url: str) -> None:
    url = empty_database_url
    migrate.upgrade(url, "0004")
    seeded = asyncio.run(seed_0001(url, datetime.now(UTC)))
    partitions = {r["name"] for r in asyncio.run(fetch(
        url, "SELECT inhrelid::regclass::text AS name FROM pg_inherits WHERE inhparent = 'events'::regclass"
    ))}
    assert len(partitions) >= 3

    migrate.upgrade(url)
    indexes = _indexes(url)
    by_table = {r["tbl"]: r for r in indexes}
    assert set(by_table) == partitions | {"events"}
    assert all(r["valid"] for r in indexes)
    assert all("WHERE (action_type <> 'internal'::text)" in str(r["def"]) for r in indexes)
    # One key per user (deduplicated by Postgres), not per event.
    assert all("(product_id, distinct_id)" in str(r["def"]) for r in indexes), indexes
    assert {r["parent"] for r in indexes if r["tbl"] != "events"} == {"ix_events_live_activity"}
    assert asyncio.run(fetch(url, "SELECT count(*) FROM events"))[0][0] == seeded

    plan = asyncio.run(_plan(url))
    assert "_live_activity" in plan, plan

    migrate.downgrade(url, "0004")
    assert _indexes(url) == []
    migrate.upgrade(url)
    assert len(_indexes(url)) == len(indexes)
