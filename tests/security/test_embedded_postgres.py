"""The embedded Postgres (``make run``) does not make every local OS user its superuser
(issue 14, finding 7).

It was initialised with ``--auth=trust`` and listened on 127.0.0.1: any local user could log in
as ``postgres`` without a password, read every product's events, and run programs as the server
(``COPY … PROGRAM``). Now the superuser has a generated SCRAM password, stored 0600 next to the
data directory, every pg_hba line asks for it, and the socket is 0700. A cluster created the
old way is converted on its next start, running or not, with its data kept.
"""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from receiver.storage import devdb
from tests.faults.kit import show


@pytest.fixture
def cluster_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = Path(tmp_path_factory.mktemp("pgsec", numbered=True))
    yield root
    devdb.remove(root)


async def _connect(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, timeout=10)


def without_password(srv: devdb.PgServer) -> str:
    return f"postgresql://postgres@127.0.0.1:{srv.port}/postgres"


def refused(dsn: str) -> bool:
    async def attempt() -> bool:
        try:
            conn = await _connect(dsn)
        except (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidPasswordError):
            return True
        await conn.close()
        return False

    return asyncio.run(attempt())


def query(dsn: str, sql: str) -> object:
    async def run() -> object:
        conn = await _connect(dsn)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    return asyncio.run(run())


def test_a_new_cluster_asks_for_the_generated_password(
    cluster_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    srv = devdb.server(cluster_dir / "pg" / "data", ephemeral=True)
    srv.start()
    try:
        assert refused(without_password(srv))
        assert refused(srv.dsn().replace(srv.password, "wrong-password"))
        assert query(srv.dsn(), "SELECT current_user") == "postgres"
        mode = stat.S_IMODE(srv.password_file.stat().st_mode)
        assert mode == 0o600, oct(mode)
        hba = (srv.data_dir / "pg_hba.conf").read_text()
        assert not srv.trusting() and devdb.AUTH_METHOD in hba
        socket_file = srv.socket_dir / f".s.PGSQL.{srv.port}"
        assert stat.S_IMODE(socket_file.stat().st_mode) == 0o700
        assert query(srv.dsn(), "SHOW unix_socket_permissions") == "0700"
    finally:
        srv.stop(mode="immediate")
    show(capsys, "security/embedded-pg", without_password="refused", password_file=oct(mode),
         socket="0700")


def test_an_old_trust_cluster_is_converted_with_its_data(cluster_dir: Path) -> None:
    data = cluster_dir / "pg" / "data"
    data.parent.mkdir(parents=True)
    # A cluster made the way `make run` used to: initdb --auth=trust, no password.
    old = devdb.PgServer(bindir=devdb.find_bindir(), data_dir=data, port=devdb.free_port(),
                         user=devdb._runas_user(), ephemeral=True)
    data.mkdir()
    old._chown()
    res = old._run([str(old.bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                    "-E", "UTF8", "--locale=C", "--no-sync"])
    assert res.returncode == 0, res.stderr
    assert old.trusting()
    # Started the old way (no conversion) and left running, as a killed `make run` leaves it.
    res = old._run([str(old.bindir / "pg_ctl"), "-D", str(data), "-l", str(old.log_file), "-o",
                    f"-h 127.0.0.1 -p {old.port} -k {old.socket_dir}", "-w", "-t", "60", "start"])
    assert res.returncode == 0, res.stderr
    try:
        assert query(without_password(old), "CREATE TABLE kept AS SELECT 1 AS x") is None
        assert not refused(without_password(old))
        srv = devdb.server(data, ephemeral=True)
        srv.start()  # finds it running and trusting: stops, converts, starts it
        assert not srv.trusting()
        assert refused(without_password(srv))
        assert query(srv.dsn(), "SELECT count(*) FROM kept") == 1  # the data survived
        assert stat.S_IMODE(srv.password_file.stat().st_mode) == 0o600
        # And a stopped one is converted the same way on its next start.
        srv.stop()
        again = devdb.server(data, ephemeral=True)
        again.start()
        assert refused(without_password(again)) and query(again.dsn(), "SELECT 1") == 1
    finally:
        devdb.PgServer(bindir=old.bindir, data_dir=data, port=0, user=old.user).stop(mode="immediate")
