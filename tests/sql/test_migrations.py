"""Migrations run forward from an empty database and from the previous head; 0002 takes an
existing unpartitioned event log over without losing or changing a row."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from receiver.storage import migrate, store

COLUMNS_0001 = (
    "product_id", "position", "received_at", "occurred_at", "source", "event", "action_type",
    "event_uuid", "dedup_key", "session_id", "distinct_id", "email", "current_url",
    "canonical_url", "pathname", "referrer", "element_tag", "element_id", "element_text",
    "input_name", "link_target", "title", "description", "session_index", "payload",
)


def dsn(url: str) -> str:
    return store.asyncpg_dsn(url)


async def fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn(url))
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def rows(url: str) -> list[dict[str, Any]]:
    recs = asyncio.run(
        fetch(url, "SELECT *, payload::text AS payload FROM events ORDER BY product_id, position")
    )
    return [dict(r) for r in recs]


def comments(url: str, table: str = "events") -> dict[str, str | None]:
    recs = asyncio.run(
        fetch(
            url,
            """
            SELECT a.attname, col_description(a.attrelid, a.attnum) AS c
            FROM pg_attribute a WHERE a.attrelid = $1::regclass AND a.attnum > 0
              AND NOT a.attisdropped
            """,
            table,
        )
    )
    return {r["attname"]: r["c"] for r in recs}


async def seed_0001(url: str, now: datetime) -> int:
    """Events for two products spread over 6 days (and one 40 days back), at revision 0001."""
    conn = await asyncpg.connect(dsn(url))
    try:
        for pid in ("alpha", "beta"):
            await conn.execute(
                "INSERT INTO products (product_id, contact_email, capture_token) "
                "VALUES ($1, 'ops@example.com', $2)",
                pid, "tok-" + pid,
            )
        records = []
        positions = {"alpha": 0, "beta": 0}
        offsets = [40 * 24, *(d * 24 for d in (5, 5, 4, 3, 2, 2, 1)), 3, 1, 0]
        for i, hours in enumerate(sorted(offsets, reverse=True)):
            for pid in ("alpha", "beta"):
                positions[pid] += 1
                received = now - timedelta(hours=hours, minutes=i)
                records.append((
                    pid, positions[pid], received, received - timedelta(seconds=2), "webhook",
                    "$pageview" if i % 2 == 0 else "$autocapture",
                    "pageview" if i % 2 == 0 else "click",
                    None, f"h:{pid}:{i}", f"s-{pid}-{i // 4}", f"user-{i % 3}",
                    f"user{i % 3}@example.com", f"https://app.example.com/p/{i}?q=1",
                    "https://app.example.com/p/:id", f"/p/{i}", "$direct",
                    None if i % 2 == 0 else "button", None, None if i % 2 == 0 else f"Button {i}",
                    None, None, f"title {i}", f"description {i}", i // 4 and i % 4,
                    orjson.dumps({"event": "x", "i": i, "nested": {"ü": [1, 2]}}).decode(),
                ))
        placeholders = [f"${n + 1}" for n in range(len(COLUMNS_0001))]
        placeholders[-1] += "::jsonb"
        insert = "INSERT INTO events ({}) VALUES ({})".format(  # noqa: S608
            ", ".join(COLUMNS_0001), ", ".join(placeholders)
        )
        await conn.executemany(insert, records)
        for pid, last in positions.items():
            await conn.execute(
                "UPDATE products SET last_position = $2 WHERE product_id = $1", pid, last
            )
        return len(records)
    finally:
        await conn.close()


def test_upgrade_from_empty_database_to_head_and_back(empty_database_url: str) -> None:
    migrate.upgrade(empty_database_url)
    version = asyncio.run(fetch(empty_database_url, "SELECT version_num FROM alembic_version"))
    assert version[0][0] == migrate.head_revision()
    parts = asyncio.run(
        fetch(
            empty_database_url,
            "SELECT inhrelid::regclass::text AS name FROM pg_inherits "
            "WHERE inhparent = 'events'::regclass",
        )
    )
    names = {r["name"] for r in parts}
    assert "events_default" in names
    assert f"events_p{datetime.now(UTC):%Y%m%d}" in names
    migrate.downgrade(empty_database_url, "base")
    left = asyncio.run(
        fetch(
            empty_database_url,
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v')",
        )
    )
    assert [r["relname"] for r in left] == ["alembic_version"]
    migrate.upgrade(empty_database_url)


def test_0002_takes_over_unpartitioned_events_without_loss(empty_database_url: str) -> None:
    url = empty_database_url
    migrate.upgrade(url, "0001")
    now = datetime.now(UTC)
    seeded = asyncio.run(seed_0001(url, now))
    before = rows(url)
    before_comments = comments(url)
    assert len(before) == seeded and all(before_comments.values())

    migrate.upgrade(url, "0002")
    after = rows(url)
    assert after == before  # every row, every column, positions intact
    assert comments(url) == before_comments  # the analysts' contract survived
    kind = asyncio.run(fetch(url, "SELECT relkind::text AS relkind FROM pg_class WHERE relname = 'events'"))
    assert kind[0]["relkind"] == "p"
    spread = asyncio.run(
        fetch(url, "SELECT tableoid::regclass::text AS part, count(*) FROM events GROUP BY 1")
    )
    by_part = {r["part"]: r["count"] for r in spread}
    assert "events_default" not in by_part  # every old day got its own partition
    assert len(by_part) >= 6
    for part in by_part:
        day = datetime.strptime(part.removeprefix("events_p"), "%Y%m%d").replace(tzinfo=UTC)
        inside = asyncio.run(
            fetch(
                url,
                f"SELECT count(*) FROM {part} WHERE received_at < $1 OR received_at >= $2",  # noqa: S608
                day, day + timedelta(days=1),
            )
        )
        assert inside[0][0] == 0

    # The stream reads across partitions, in order, at head.
    migrate.upgrade(url)

    async def stream() -> list[int]:
        conn = await asyncpg.connect(dsn(url))
        try:
            got: list[int] = []
            cursor = 0
            while True:
                page = await store.read_after(conn, "alpha", cursor, 3)
                if not page:
                    return got
                got += [r.position for r in page]
                cursor = page[-1].position
        finally:
            await conn.close()

    alpha = [r["position"] for r in before if r["product_id"] == "alpha"]
    assert asyncio.run(stream()) == alpha

    # And back down to 0001: the same rows in a plain table again.
    migrate.downgrade(url, "0001")
    assert rows(url) == before
    assert comments(url) == before_comments
    kind = asyncio.run(fetch(url, "SELECT relkind::text AS relkind FROM pg_class WHERE relname = 'events'"))
    assert kind[0]["relkind"] == "r"
    migrate.upgrade(url)
    # Later revisions only add nullable columns (0006: conversation_id); the rest is intact.
    at_head = rows(url)
    assert [{k: r[k] for k in COLUMNS_0001} for r in at_head] == before
    assert {r["conversation_id"] for r in at_head} == {None}


def test_models_match_the_migrations(empty_database_url: str) -> None:
    """`alembic check` at head: receiver.storage.store's metadata and the migrations agree (the
    partitions that maintenance creates are not drift)."""
    from alembic import command

    migrate.upgrade(empty_database_url)

    async def add_partition() -> None:
        from receiver.storage import retention

        conn = await asyncpg.connect(dsn(empty_database_url))
        try:
            await retention.create_partition(conn, (datetime.now(UTC) + timedelta(days=9)).date())
        finally:
            await conn.close()

    asyncio.run(add_partition())
    command.check(migrate.config(empty_database_url))
