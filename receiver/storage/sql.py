"""The analysts' SQL surface: psql on the configured database, and a read-only role.

What analysts may read is exactly :data:`READABLE`: the event table (with its partitions) and
the views from migration 0002. Products, credentials, dedup keys, session counters and the
maintenance bookkeeping are never granted.
"""

from __future__ import annotations

import os
import shutil

import asyncpg

from receiver.storage import devdb, dsn, retention

VIEWS: tuple[str, ...] = ("sessions", "pageviews", "clicks", "daily_activity")
READABLE: tuple[str, ...] = ("events", *VIEWS)


class SqlError(RuntimeError):
    pass


# --------------------------------------------------------------------------- psql


def find_psql() -> str:
    """psql next to the Postgres binaries the embedded server uses, else on PATH."""
    try:
        candidate = devdb.find_bindir() / "psql"
        if candidate.exists():
            return str(candidate)
    except devdb.DevDBError:
        pass
    found = shutil.which("psql")
    if found:
        return found
    raise SqlError("psql not found: `apt-get install postgresql-client` or set PG_BINDIR")


def psql_invocation(database_url: str, extra: list[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """argv and environment for psql on ``database_url``.

    The password travels in ``PGPASSWORD`` rather than on the command line (where ``ps``
    would show it); asyncpg's ``ssl=`` query parameter becomes libpq's ``sslmode=``.
    """
    uri, password = dsn.for_libpq(database_url)  # host lists (pg_auto_failover) included
    env = dict(os.environ)
    env.setdefault("PGAPPNAME", "receiver-sql")
    if password is not None:
        env["PGPASSWORD"] = password
    return [find_psql(), "--dbname", uri, *(extra or [])], env


# --------------------------------------------------------------------------- read-only role


async def grant_readonly(
    conn: asyncpg.Connection, role: str, *, password: str | None = None, login: bool = False
) -> dict[str, object]:
    """Create ``role`` if missing and let it read the events and the views, nothing else.

    A new role is NOLOGIN (a group role: ``GRANT <role> TO alice``) unless ``login`` or a
    ``password`` is given. Existing roles keep their other attributes and grants: this never
    revokes anything. Partitions created later get the same SELECT grant from the
    maintenance that creates them (``receiver.storage.retention.create_partition``), which is
    narrower than ``ALTER DEFAULT PRIVILEGES`` (that would hand the role every future table).
    """
    created = False
    async with conn.transaction():
        exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
        can_login = login or password is not None
        if not exists:
            stmt = await conn.fetchval(
                "SELECT format('CREATE ROLE %I ' || $2, $1::text)", role,
                "LOGIN" if can_login else "NOLOGIN",
            )
            await conn.execute(stmt)
            created = True
        elif can_login:
            await conn.execute(await conn.fetchval("SELECT format('ALTER ROLE %I LOGIN', $1::text)", role))
        if password is not None:
            await conn.execute(
                await conn.fetchval(
                    "SELECT format('ALTER ROLE %I PASSWORD %L', $1::text, $2::text)", role, password
                )
            )
        ident = await conn.fetchval("SELECT quote_ident($1)", role)
        db = await conn.fetchval("SELECT quote_ident(current_database())")
        schema = await conn.fetchval("SELECT quote_ident(current_schema())")
        await conn.execute(f"GRANT CONNECT ON DATABASE {db} TO {ident}")
        await conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {ident}")
        parts = sorted(await retention.partitions(conn))
        for name in (*READABLE, *parts):
            await conn.execute(f'GRANT SELECT ON "{name}" TO {ident}')
        can = await conn.fetchval("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1", role)
    return {
        "role": role, "created": created, "can_login": bool(can),
        "granted_select_on": [*READABLE, f"{len(parts)} partitions of events"],
    }
