"""``python -m bench.live_index_reads``: what one live-activity read costs Postgres under each
shape of the live-activity index, for an ordinary user and for one with 50,000 events in the
window (EXPLAIN ANALYZE, best of 5, on a throwaway cluster; about a minute).

A key per event, ``(product_id, distinct_id, position)``, stops at the limit. A key per user,
``(product_id, distinct_id)`` (what ships: Postgres deduplicates it, so ingest pays far less),
fetches every row of the user inside the window first. docs/performance.md has the figures.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from pathlib import Path

import asyncpg

from receiver.storage import devdb

QUERY = """
SELECT position FROM t
WHERE product_id = $1 AND distinct_id = $2 AND action_type <> 'internal'
  AND received_at >= now() - interval '30 minutes'
ORDER BY position DESC LIMIT $3
"""
SHAPES = {
    "per event": "CREATE INDEX ix ON t (product_id, distinct_id, position) WHERE action_type <> 'internal'",
    "per user": "CREATE INDEX ix ON t (product_id, distinct_id) WHERE action_type <> 'internal'",
}


async def measure(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TABLE t (product_id text, distinct_id text, position bigint, "
            "received_at timestamptz, action_type text, filler text)"
        )
        # 1,000,000 rows of 10,000 users, interleaved, a quarter internal; then one heavy user.
        await conn.execute("""
            INSERT INTO t SELECT 'prod_abcdef0123', 'user-' || (i % 10000), i,
                   now() - interval '20 minutes' + i * interval '1 millisecond',
                   CASE WHEN i % 4 = 0 THEN 'internal' ELSE 'click' END, repeat('x', 300)
            FROM generate_series(1, 1000000) i
        """)
        await conn.execute("""
            INSERT INTO t SELECT 'prod_abcdef0123', 'heavy', 1000000 + i,
                   now() - interval '20 minutes' + i * interval '10 milliseconds', 'click',
                   repeat('x', 300)
            FROM generate_series(1, 50000) i
        """)
        for shape, ddl in SHAPES.items():
            await conn.execute("DROP INDEX IF EXISTS ix")
            await conn.execute(ddl)
            await conn.execute("VACUUM ANALYZE t")
            size = await conn.fetchval("SELECT pg_size_pretty(pg_relation_size('ix'))")
            for user, limit in (("user-7", 20), ("heavy", 20), ("heavy", 5000)):
                runs = []
                for _ in range(5):
                    plan = await conn.fetchval(
                        "EXPLAIN (ANALYZE, FORMAT JSON) " + QUERY, "prod_abcdef0123", user, limit
                    )
                    runs.append(json.loads(plan)[0]["Execution Time"])
                best = min(runs)
                print(f"{shape:9s}  index {size:>8s}  {user:6s}  limit {limit:5d}  {best:7.2f} ms")
    finally:
        await conn.close()


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="lir", dir="/tmp"))
    srv = devdb.server(root / "data")
    srv.start()
    try:
        asyncio.run(measure(srv.dsn("postgres")))
    finally:
        srv.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
