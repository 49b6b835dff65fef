"""The URI ``pg_autoctl show uri --formation default`` prints works unchanged as
RECEIVER_DATABASE_URL: a host list, ``target_session_attrs=read-write``, ``sslmode=prefer`` and
no user (libpq's PGUSER applies, as it does for psql).

Against the session cluster: the URI lists a host that refuses connections first, so every
connection the receiver makes (pool, LISTEN, Alembic, psql) has to walk the list.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from receiver.settings import Settings
from receiver.storage import devdb, dsn
from tests.conftest import register_product
from tests.faults.kit import collect_stream, hog_event, new_product_id

ROOT = Path(__file__).resolve().parents[2]
RECEIVER = str(Path(sys.executable).parent / "receiver")


def autoctl_style(pg: devdb.PgServer, database: str) -> str:
    """What pg_autoctl prints for a formation whose first node is down."""
    dead = devdb.free_port()
    return (
        f"postgres://127.0.0.1:{dead},127.0.0.1:{pg.port}/{database}"
        "?target_session_attrs=read-write&sslmode=prefer"
    )


def test_parse_multi_host_uri() -> None:
    uri = "postgres://node1:5432,node2:5433,[::1]/receiver?target_session_attrs=read-write&sslmode=prefer"
    d = dsn.parse(uri)
    assert d.hosts == (("node1", 5432), ("node2", 5433), ("::1", None))
    assert d.database == "receiver" and d.user is None and d.password is None
    assert d.param("target_session_attrs") == "read-write"
    assert dsn.for_asyncpg("postgresql+asyncpg://a:1,b:2/db") == "postgresql://a:1,b:2/db"
    assert dsn.parse(d.render()) == d


def test_password_stays_out_of_psql_argv_and_status() -> None:
    uri = "postgresql://app:s%40cret@node1:5432,node2:5432/receiver?ssl=require"
    plain, password = dsn.for_libpq(uri)
    assert password == "s@cret"
    assert "cret" not in plain and plain.startswith("postgresql://app@node1:5432,node2:5432/receiver")
    assert "sslmode=require" in plain
    shown = dsn.redacted(uri)
    assert "cret" not in shown and "app:***@node1:5432,node2:5432" in shown
    with pytest.raises(dsn.DsnError):
        dsn.parse("mysql://x/y")
    with pytest.raises(dsn.DsnError):
        dsn.parse("postgres://node1:54x2/db")


def test_settings_accept_the_uri() -> None:
    uri = "postgres://127.0.0.1:5501,127.0.0.1:5502/receiver?target_session_attrs=read-write&sslmode=prefer"
    s = Settings(database_url=uri)
    assert dsn.parse(s.database_url_str()).hosts == (("127.0.0.1", 5501), ("127.0.0.1", 5502))


def _cli(*args: str, url: str, password: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECEIVER_")}
    # pg_autoctl's URIs carry no credentials: libpq's environment (or ~/.pgpass) supplies them.
    env.update(RECEIVER_DATABASE_URL=url, PGUSER="postgres", PGPASSWORD=password)
    return subprocess.run(
        [RECEIVER, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


async def test_serve_migrate_and_sql_walk_the_host_list(
    pg: devdb.PgServer, empty_database_url: str, spawn_receiver: Callable[..., Any]
) -> None:
    database = empty_database_url.rsplit("/", 1)[1]
    uri = autoctl_style(pg, database)

    migrated = _cli("migrate", url=uri, password=pg.password)
    assert migrated.returncode == 0, migrated.stderr
    assert "database at migration" in migrated.stdout
    psql = _cli("sql", "-tA", "-c", "SELECT inet_server_port()", url=uri, password=pg.password)
    assert psql.returncode == 0, psql.stderr
    assert psql.stdout.strip() == str(pg.port)

    rp = spawn_receiver(RECEIVER_DATABASE_URL=uri, PGUSER="postgres", PGPASSWORD=pg.password)
    product = register_product(rp.base_url, new_product_id("uri"))
    async with httpx.AsyncClient() as client:
        r = await client.post(
            product.webhook_url, json=hog_event(product.product_id, 0),
            headers={"x-posthog-secret": product.webhook_secret},
        )
        assert r.status_code == 200, r.text
        ready = (await client.get(f"{rp.base_url}/readyz")).json()
    assert ready["status"] == "ready"
    sub = await collect_stream(product.stream_url, product.stream_key, until=1, since=0)
    assert sub.positions == [1]
    assert "Traceback" not in rp.log()
