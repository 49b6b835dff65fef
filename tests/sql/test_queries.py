"""Every example query of the event-table page runs against seeded data and returns what it says;
the views the reference page is generated from match the database."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from receiver.storage import migrate, store
from scripts.docs_reference import migration_views
from tests.docblocks import code_blocks
from tests.sql.seed import HOST, seed_story


def blocks(kind: str) -> dict[str, str]:
    """The page's ``sql`` blocks that start with ``-- <kind>: <name>``, by name."""
    out: dict[str, str] = {}
    for block in code_blocks("docs/event-table.md", "sql"):
        body = block.text
        m = re.match(rf"-- {kind}: (\w+)\n", body)
        if m:
            assert m.group(1) not in out, f"duplicate {kind} {m.group(1)}"
            out[m.group(1)] = body
    return out


def to_asyncpg(sql: str) -> str:
    return sql.replace(":'product'", "$1")


def page(path: str) -> str:
    return HOST + path


def expected(today: date) -> dict[str, list[tuple[Any, ...]]]:
    d = [today - timedelta(days=i) for i in range(3)]
    return {
        "top_clicked_elements_per_page": [
            (page("/projects/:id"), "Save", 1),
            (page("/reports"), "Export", 4),
            (page("/reports"), "Filters", 1),
            (page("/team"), "Invite member", 4),
            (page("/team/invite"), "Send invite", 1),
        ],
        "invite_funnel": [(4, 3, 2, Decimal("50.0"))],
        "sessions_ending_on_error_page": [
            ("s4", "dave", "dave@acme.test", page("/error"), "<last_seen>", 3),
            ("s3", "carol", "carol@acme.test", page("/error"), "<last_seen>", 4),
        ],
        "rage_clicks": [(page("/reports"), "Export", 1, 4)],
        "daily_active_users": [
            (d[2], 3, 2, 6, 4),  # anon-a1 and alice count as two users
            (d[1], 2, 2, 7, 4),
            (d[0], 2, 2, 9, 2),
        ],
        "most_common_exit_pages": [
            (page("/error"), 2),
            (page("/settings"), 2),
            (page("/reports"), 1),
            (page("/team"), 1),
        ],
        "time_to_first_click": [
            ("s6", "alice", Decimal("3.0")),
            ("s3", "carol", Decimal("4.0")),
            ("s5", "erin", Decimal("10.0")),
            ("s1", "alice", Decimal("12.0")),
            ("s4", "dave", Decimal("30.0")),
        ],
    }


@pytest.fixture
def seeded(database_url: str) -> tuple[str, date]:
    return database_url, asyncio.run(seed_story(database_url))


async def run_all(url: str, queries: dict[str, str], product: str) -> dict[str, list[asyncpg.Record]]:
    conn = await asyncpg.connect(store.asyncpg_dsn(url))
    try:
        return {name: await conn.fetch(to_asyncpg(sql), product) for name, sql in queries.items()}
    finally:
        await conn.close()


def test_docs_have_at_least_six_named_queries_all_checked() -> None:
    queries = blocks("name")
    assert len(queries) >= 6
    assert set(queries) == set(expected(date.today()))
    for required in ("top_clicked_elements_per_page", "invite_funnel", "sessions_ending_on_error_page"):
        assert required in queries


def test_every_documented_query_returns_the_expected_rows(seeded: tuple[str, date]) -> None:
    url, today = seeded
    results = asyncio.run(run_all(url, blocks("name"), "acme"))
    want = expected(today)
    for name, records in results.items():
        got = [tuple(r) for r in records]
        if name == "sessions_ending_on_error_page":
            assert all(isinstance(r[4], datetime) for r in got)
            got = [(*r[:4], "<last_seen>", r[5]) for r in got]
        assert got == want[name], name


def test_queries_see_only_their_product(seeded: tuple[str, date]) -> None:
    url, _ = seeded
    results = asyncio.run(run_all(url, blocks("name"), "other"))
    assert [tuple(r) for r in results["top_clicked_elements_per_page"]] == [
        (page("/team"), "Invite member", 1)
    ]
    assert [tuple(r)[:3] for r in results["invite_funnel"]] == [(1, 1, 0)]
    assert results["sessions_ending_on_error_page"] == []


def test_sessions_view_row(seeded: tuple[str, date]) -> None:
    url, today = seeded

    async def fetch() -> asyncpg.Record:
        conn = await asyncpg.connect(store.asyncpg_dsn(url))
        try:
            return await conn.fetchrow(
                "SELECT * FROM sessions WHERE product_id = 'acme' AND session_id = 's1'"
            )
        finally:
            await conn.close()

    row = asyncio.run(fetch())
    start = datetime(today.year, today.month, today.day, 1, tzinfo=UTC) - timedelta(days=2)
    assert row["distinct_id"] == "alice"  # the identified id, not the anonymous one
    assert row["email"] == "alice@acme.test"
    assert row["first_seen"] == start
    assert row["last_seen"] == start + timedelta(seconds=30)
    assert row["duration"] == timedelta(seconds=30)
    assert row["duration_seconds"] == 30.0
    assert row["events"] == 4  # $identify is SDK bookkeeping
    assert row["pageviews"] == 2
    assert row["pages"] == 3
    assert row["entry_page"] == page("/team")
    assert row["exit_page"] == page("/settings")


def test_documented_view_columns_match_the_database(database_url: str) -> None:
    async def columns() -> dict[str, list[tuple[str, str, str]]]:
        conn = await asyncpg.connect(store.asyncpg_dsn(database_url))
        try:
            rows = await conn.fetch(
                """
                SELECT c.relname AS view, a.attname, format_type(a.atttypid, a.atttypmod) AS type,
                       col_description(c.oid, a.attnum) AS comment
                FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
                WHERE c.relkind = 'v' AND c.relnamespace = 'public'::regnamespace
                ORDER BY c.relname, a.attnum
                """
            )
        finally:
            await conn.close()
        out: dict[str, list[tuple[str, str, str]]] = {}
        for r in rows:
            out.setdefault(r["view"], []).append((r["attname"], r["type"], r["comment"]))
        return out

    db = asyncio.run(columns())
    # The reference page renders migration_views(): its views, columns (in order) and texts are
    # the database's.
    documented = {
        name: list(cols.items()) for name, (_, _, cols) in migration_views().items()
    }
    assert documented == {view: [(n, c) for n, _, c in cols] for view, cols in db.items()}
    assert all(comment for cols in db.values() for _, _, comment in cols)


def test_views_exist_at_head(database_url: str) -> None:
    assert migrate.head_revision() is not None
    assert set(migration_views()) == {"sessions", "pageviews", "clicks", "daily_activity"}
