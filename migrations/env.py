"""Alembic environment: the async template, plus connection sharing for tests and the CLI."""

from __future__ import annotations

import asyncio
import os
import re

import asyncpg
from alembic import context
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from receiver.storage.dsn import for_asyncpg
from receiver.storage.store import metadata

config = context.config
target_metadata = metadata

# The daily partitions of ``events`` (and its DEFAULT partition) are created and dropped by
# receiver.storage.retention at run time, not by migrations: autogenerate must not see them as drift.
_PARTITION = re.compile(r"^events_(p\d{8}|default)$")


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    if type_ == "table" and name and _PARTITION.match(name):
        return False
    return True


# Held for the whole upgrade: receivers started together (behind a load balancer) migrate one
# at a time, and the later ones find the schema at head.
MIGRATION_LOCK = 0x72637631  # "rcv1"


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("RECEIVER_DATABASE_URL", "")
    if not url:
        raise RuntimeError("no database URL: set RECEIVER_DATABASE_URL")
    return url


def run_migrations_offline() -> None:
    context.configure(
        dialect_name="postgresql", target_metadata=target_metadata, literal_binds=True,
        include_name=include_name, dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection, target_metadata=target_metadata, include_name=include_name
    )
    with context.begin_transaction():
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
        context.run_migrations()


async def run_async_migrations() -> None:
    # SQLAlchemy's URL parser cannot read a host list (pg_autoctl's multi-host URI): asyncpg
    # makes the connection from the URI as given, SQLAlchemy only drives it.
    dsn = for_asyncpg(_url())
    engine = create_async_engine(
        "postgresql+asyncpg://", async_creator=lambda: asyncpg.connect(dsn), poolclass=pool.NullPool
    )
    async with engine.connect() as connection:
        await connection.run_sync(do_run_migrations)
    await engine.dispose()


def run_migrations_online() -> None:
    shared = config.attributes.get("connection", None)
    if shared is not None:
        do_run_migrations(shared)
    else:
        asyncio.run(run_async_migrations())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
