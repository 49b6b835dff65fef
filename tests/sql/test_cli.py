"""`receiver sql`, `receiver db ...` and `receiver erase` as an operator runs them (subprocesses)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from receiver.ingest import normalize
from receiver.storage import devdb, retention, sql, store
from tests.sql.seed import connect, seed_story
from tests.sql.test_queries import blocks

ROOT = Path(__file__).resolve().parents[2]
RECEIVER = str(Path(sys.executable).parent / "receiver")


def cli(*args: str, url: str | None, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("RECEIVER_")}
    if url is not None:
        full["RECEIVER_DATABASE_URL"] = url
    full.update(env)
    return subprocess.run(
        [RECEIVER, *args], env=full, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        check=False,
    )


def as_role(url: str, role: str, password: str | None = None) -> str:
    """The same database as ``role`` (with its password: the embedded cluster asks for one)."""
    dsn = make_url(store.asyncpg_dsn(url)).set(username=role, password=password)
    return dsn.render_as_string(hide_password=False)


@pytest.fixture
def role(pg: devdb.PgServer, database_url: str) -> Iterator[str]:
    name = "analyst_" + secrets.token_hex(4)
    yield name

    async def drop() -> None:
        conn = await asyncpg.connect(store.asyncpg_dsn(database_url))
        try:
            if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name):
                await conn.execute(f'DROP OWNED BY "{name}"')
                await conn.execute(f'DROP ROLE "{name}"')
        finally:
            await conn.close()

    asyncio.run(drop())


# --------------------------------------------------------------------------- grant-readonly


def test_grant_readonly_can_read_events_and_views_and_nothing_else(database_url: str, role: str) -> None:
    asyncio.run(seed_story(database_url))

    async def maintain() -> None:
        conn = await connect(database_url)
        try:
            await retention.maintain(conn, retention.Policy())
        finally:
            await conn.close()

    asyncio.run(maintain())
    res = cli("db", "grant-readonly", role, "--password", "pw-for-test", "--json", url=database_url)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["created"] is True and out["can_login"] is True

    async def probe() -> None:
        conn = await asyncpg.connect(as_role(database_url, role, "pw-for-test"))
        try:
            assert await conn.fetchval("SELECT count(*) FROM events") > 0
            for view in sql.VIEWS:
                await conn.fetch(f"SELECT * FROM {view} LIMIT 1")  # noqa: S608
            today = retention.partition_name(datetime.now(UTC).date())
            await conn.fetch(f"SELECT * FROM {today} LIMIT 1")  # noqa: S608
            for table in ("products", "credentials", "event_keys", "session_counters",
                          "retention_state", "alembic_version", "server_secrets"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.fetch(f"SELECT * FROM {table} LIMIT 1")  # noqa: S608
            for stmt in (
                "INSERT INTO events (product_id, position, received_at, occurred_at, source, "
                "event, action_type, dedup_key, title, description, session_index) VALUES "
                "('x', 1, now(), now(), 'webhook', 'e', 'custom', 'k', 't', 'd', 0)",
                "UPDATE events SET email = NULL",
                "DELETE FROM events",
                f"DELETE FROM {today}",  # noqa: S608
                "TRUNCATE events",
                "CREATE TABLE mine (x int)",
                "CREATE VIEW mine AS SELECT 1",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(stmt)
        finally:
            await conn.close()

        # A partition created later by the maintenance is readable directly too.
        owner = await connect(database_url)
        try:
            later = datetime.now(UTC) + timedelta(days=30)
            report = await retention.maintain(owner, retention.Policy(), now=later)
            new = retention.partition_name(later.date())
            assert new in report.created
        finally:
            await owner.close()
        conn = await asyncpg.connect(as_role(database_url, role, "pw-for-test"))
        try:
            await conn.fetch(f"SELECT * FROM {new}")  # noqa: S608
        finally:
            await conn.close()

    asyncio.run(probe())


def test_grant_readonly_defaults_to_a_nologin_group_role_and_is_idempotent(
    database_url: str, role: str
) -> None:
    async def scenario() -> None:
        conn = await asyncpg.connect(store.asyncpg_dsn(database_url))
        try:
            first = await sql.grant_readonly(conn, role)
            again = await sql.grant_readonly(conn, role)
        finally:
            await conn.close()
        assert first["created"] is True and first["can_login"] is False
        assert again["created"] is False
        with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
            await asyncpg.connect(as_role(database_url, role))

    asyncio.run(scenario())


# --------------------------------------------------------------------------- erase


def test_erase_removes_a_person_everywhere_and_says_how_many(database_url: str) -> None:
    asyncio.run(seed_story(database_url))

    async def counts() -> dict[str, int]:
        conn = await connect(database_url)
        try:
            rows = await conn.fetch(
                "SELECT product_id || ':' || coalesce(distinct_id, '') AS k, count(*) AS n "
                "FROM events GROUP BY 1"
            )
            return {r["k"]: r["n"] for r in rows}
        finally:
            await conn.close()

    async def one_payload() -> dict[str, object]:
        conn = await connect(database_url)
        try:
            return await conn.fetchval(
                "SELECT payload FROM events WHERE distinct_id = 'alice' AND product_id = 'acme' "
                "ORDER BY position LIMIT 1"
            )
        finally:
            await conn.close()

    before = asyncio.run(counts())
    redelivery = asyncio.run(one_payload())
    assert before["acme:alice"] == 7 and before["acme:anon-a1"] == 1 and before["other:alice"] == 2

    res = cli("erase", "--distinct-id", "alice", "--product", "acme", url=database_url)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("removed 8 rows: 7 events of 'alice' and 1 other events")
    after = asyncio.run(counts())
    assert "acme:alice" not in after and "acme:anon-a1" not in after
    assert after["other:alice"] == 2
    assert {k: v for k, v in after.items()} == {
        k: v for k, v in before.items() if k not in ("acme:alice", "acme:anon-a1")
    }

    res = cli("erase", "--distinct-id", "alice", "--json", url=database_url)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["rows_removed"] == 2
    assert not any(k.endswith(":alice") for k in asyncio.run(counts()))

    # The dedup key stayed, so a late redelivery of an erased event is not stored again.
    async def redeliver() -> store.Appended:
        conn = await connect(database_url)
        try:
            now = datetime.now(UTC)
            event = normalize.from_webhook(redelivery, received_at=now)
            (out,) = await store.append(conn, [store.Pending("acme", now, event)])
            return out
        finally:
            await conn.close()

    assert asyncio.run(redeliver()).position is None

    res = cli("erase", "--distinct-id", "nobody", url=database_url)
    assert res.returncode == 0 and res.stdout.startswith("removed 0 rows")


# --------------------------------------------------------------------------- db maintain / retention


def test_db_maintain_and_retention_commands(database_url: str) -> None:
    asyncio.run(seed_story(database_url))
    res = cli("db", "maintain", "--json", url=database_url)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["skipped"] is False and report["moved_from_default"] > 0

    res = cli("db", "retention", "acme", "--days", "7", "--payload-days", "1", "--json", url=database_url)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["retention_days"] == 7 and out["payload_retention_days"] == 1
    res = cli("db", "retention", "acme", "--days", "default", "--json", url=database_url,
              RECEIVER_RETENTION_DAYS="45")
    out = json.loads(res.stdout)
    assert out["retention_days"] == "default" and out["effective_retention_days"] == 45
    assert out["payload_retention_days"] == 1
    res = cli("db", "retention", "nope", url=database_url)
    assert res.returncode == 1 and "unknown product" in res.stderr


# --------------------------------------------------------------------------- receiver sql


def test_receiver_sql_runs_psql_on_the_configured_database(database_url: str, tmp_path: Path) -> None:
    asyncio.run(seed_story(database_url))
    res = cli("sql", "-At", "-c", "SELECT count(*) FROM sessions WHERE product_id = 'acme'",
              url=database_url)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "6"
    # The documented way to run an example query: a file and the product variable.
    query = tmp_path / "funnel.sql"
    query.write_text(blocks("name")["invite_funnel"])
    res = cli("sql", "-At", "-v", "product=acme", "-f", str(query), url=database_url)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "4|3|2|50.0"
    res = cli("sql", "-At", "-c", "SELECT nope", url=database_url)
    assert res.returncode != 0 and "nope" in res.stderr


def test_receiver_sql_on_the_embedded_database() -> None:
    root = Path(tempfile.mkdtemp(prefix="rcvsql", dir="/tmp"))
    # The server runs as another user, with root's group: it must be able to enter the dir.
    root.chmod(0o755)
    port = str(devdb.free_port())
    try:
        res = cli(
            "sql", "-At", "-c", "SELECT count(*) FROM events", url=None, timeout=120,
            RECEIVER_DATA_DIR=str(root), RECEIVER_EMBEDDED_PG_PORT=port,
        )
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == "0"
        srv = devdb.server(root / "pg" / "data", int(port))
        assert srv.running_port() is None  # a one-shot command stops what it started
        assert res.stderr == ""  # and prints nothing the user did not ask for
    finally:
        srv = devdb.server(root / "pg" / "data", int(port))
        if srv.running_port() is not None:
            srv.stop(mode="immediate")
        devdb.remove(root)


def test_unknown_options_are_still_rejected_outside_sql() -> None:
    res = cli("migrate", "--bogus", url="postgresql://nowhere/none")
    assert res.returncode == 2 and "unrecognized arguments: --bogus" in res.stderr
