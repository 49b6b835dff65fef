"""A pg_auto_failover formation on localhost: a monitor and two Postgres 15 nodes, the second a
synchronous standby of the first (``synchronous_standby_names = 'ANY 1 (…)'``), built by
running the blocks of docs/high-availability.md ("Set it up") as written.

Installed by ``scripts/ha-deps.sh`` (Debian's postgresql-15-auto-failover and
pg-auto-failover-cli, run by ``make test``). Every process runs as the unprivileged user the
embedded Postgres uses (``receiver.storage.devdb``), in its own session, with its XDG
directories under one /tmp directory: :meth:`Formation.close` kills every process group it
started and removes that directory.

The monitor's health checks and the nodes' partition timeout are shortened as the page shows,
so a failover completes in seconds instead of ~35 s. One thing the page does not do: fsync is
off on the nodes, for speed (kill -9 of a process keeps the OS page cache).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from receiver.storage import devdb
from tests.docblocks import one_block
from tests.unavailable import unavailable

PG_BIN = Path("/usr/lib/postgresql/15/bin")
EXTENSION = Path("/usr/lib/postgresql/15/lib/pgautofailover.so")
DATABASE = "receiver"


def commands(text: str) -> list[str]:
    """The shell commands of a block: continuation lines joined, comments and blanks dropped."""
    out: list[str] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        out.append((current + stripped).strip())
        current = ""
    return out


def require_pg_auto_failover() -> str:
    autoctl = shutil.which("pg_autoctl")
    if autoctl is None or not (PG_BIN / "pg_ctl").exists() or not EXTENSION.exists():
        unavailable("pg_auto_failover is not installed (scripts/ha-deps.sh installs it)")
    return autoctl


@dataclass
class Node:
    name: str
    port: int
    pgdata: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.pgdata / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None


@dataclass
class Formation:
    root: Path
    autoctl: str
    user: str | None
    monitor: Node
    nodes: list[Node] = field(default_factory=list)
    killed: list[int] = field(default_factory=list)

    # ------------------------------------------------------------------ processes

    @property
    def env(self) -> dict[str, str]:
        """What the page's blocks expect: XDG directories of the user running pg_autoctl, and
        the variables the page names."""
        home = str(self.root)
        return {
            "PATH": f"{PG_BIN}:/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8",
            "XDG_CONFIG_HOME": f"{home}/config", "XDG_DATA_HOME": f"{home}/share",
            "XDG_RUNTIME_DIR": f"{home}/run", "PG_CONFIG": str(PG_BIN / "pg_config"),
            "MONITOR_PGDATA": str(self.monitor.pgdata), "MONITOR_PORT": str(self.monitor.port),
            "MONITOR_URI": f"postgres://autoctl_node@127.0.0.1:{self.monitor.port}/pg_auto_failover",
        }

    def node_env(self, node: Node) -> dict[str, str]:
        return {**self.env, "NODE": node.name, "PGDATA": str(node.pgdata), "PGPORT": str(node.port)}

    def shell(
        self, command: str, env: dict[str, str] | None = None, *, checkpoint: Node | None = None,
        timeout: float = 120,
    ) -> str:
        """Run one command of the page with bash, as the server user; its stdout.

        ``checkpoint``: while it runs, CHECKPOINT that node every 0.5 s (a base backup starts
        with a spread checkpoint, minutes long on an idle server, as the page says).
        """
        log = self.root / "commands.log"
        with log.open("ab") as fh:
            fh.write(f"$ {command}\n".encode())
        with (self.root / "out.tmp").open("wb") as out, log.open("ab") as err:
            proc = subprocess.Popen(
                ["bash", "-c", command], env=env or self.env, cwd=self.root, stdout=out, stderr=err,
                start_new_session=True, **self._ids(),
            )
            deadline = time.monotonic() + timeout
            try:
                while proc.poll() is None:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"timed out: {command}\n{log.read_text()[-3000:]}")
                    if checkpoint is not None:
                        with contextlib.suppress(Exception):
                            asyncio.run(_exec(self.dsn(checkpoint, "postgres"), "CHECKPOINT"))
                    time.sleep(0.2 if checkpoint is None else 0.5)
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=5)
        stdout = (self.root / "out.tmp").read_text()
        if proc.returncode != 0:
            raise AssertionError(f"failed ({proc.returncode}): {command}\n{log.read_text()[-3000:]}")
        return stdout

    def background(self, node: Node, command: str, env: dict[str, str] | None = None) -> None:
        """A ``pg_autoctl run`` of the page: in its own session, stopped by :meth:`close`."""
        with node.log.open("ab") as fh:
            node.proc = subprocess.Popen(
                ["bash", "-c", "exec " + command], env=env or self.env, cwd=self.root, stdout=fh,
                stderr=subprocess.STDOUT, start_new_session=True, **self._ids(),
            )

    def run_block(self, text: str, node: Node, env: dict[str, str], checkpoint: Node | None = None) -> None:
        for command in commands(text):
            if command.startswith("pg_autoctl run "):
                self.background(node, command, env)
            else:
                self.shell(command, env, checkpoint=checkpoint if "create postgres" in command else None)

    def _ids(self) -> dict[str, Any]:
        if not self.user:
            return {}
        pw = pwd.getpwnam(self.user)
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}

    def run(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [self.autoctl, *args], env=self.env, cwd=self.root, capture_output=True, text=True,
            timeout=timeout, check=False, **self._ids(),
        )
        if check and res.returncode != 0:
            raise AssertionError(f"pg_autoctl {' '.join(args)} failed:\n{res.stderr[-3000:]}")
        return res

    def spawn(self, node: Node, *args: str) -> subprocess.Popen[bytes]:
        with node.log.open("ab") as fh:
            return subprocess.Popen(
                [self.autoctl, *args], env=self.env, cwd=self.root, stdout=fh,
                stderr=subprocess.STDOUT, start_new_session=True, **self._ids(),
            )

    # ------------------------------------------------------------------ queries

    def uri(self) -> str:
        """What ``pg_autoctl show uri --formation default`` prints (the page's command), unchanged."""
        shown = one_block("docs/high-availability.md", "pg_autoctl show state", "bash")
        [command] = [c for c in commands(shown.text) if "show uri" in c]
        return self.shell(command).strip()

    def state(self) -> list[dict[str, Any]]:
        res = self.run("show", "state", "--json", "--pgdata", str(self.monitor.pgdata), check=False)
        if res.returncode != 0:
            return []
        try:
            return list(json.loads(res.stdout))
        except json.JSONDecodeError:
            return []

    def node_state(self, node: Node) -> tuple[str | None, str | None]:
        for s in self.state():
            if s.get("nodename") == node.name:
                return s.get("current_group_state"), s.get("assigned_group_state")
        return None, None

    def primary(self) -> Node:
        for node in self.nodes:
            reported, goal = self.node_state(node)
            if reported in ("primary", "wait_primary", "single") and goal == reported:
                return node
        raise AssertionError(f"no primary in {self.state()}")

    def dsn(self, node: Node, database: str = DATABASE) -> str:
        return f"postgresql://postgres@127.0.0.1:{node.port}/{database}"

    async def fetch(self, node: Node, sql: str, *args: Any, database: str = DATABASE) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.dsn(node, database), timeout=5)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    # ------------------------------------------------------------------ faults

    def kill_node(self, node: Node) -> list[int]:
        """kill -9 of the node's postmaster and of its keeper (every pg_autoctl process of the
        node). The backends are left to notice their postmaster's death, as after a crash."""
        pids: list[int] = []
        postmaster = node.postmaster_pid()
        keeper = [node.proc.pid] if node.proc is not None else []
        keeper += _descendants(keeper, only="pg_autoctl")
        for pid in [*keeper, *([postmaster] if postmaster else [])]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                pids.append(pid)
        self.killed.extend(pids)
        return pids

    # ------------------------------------------------------------------ teardown

    def close(self) -> None:
        procs = [n.proc for n in (self.monitor, *self.nodes) if n.proc is not None]
        for p in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
        # Postgres children whose pg_autoctl parent was killed alone are in the same groups;
        # postmasters of a node killed by kill_node have orphaned backends in it as well.
        for node in (self.monitor, *self.nodes):
            pid = node.postmaster_pid()
            if pid:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=10)
        _wait_gone(self.root)
        shutil.rmtree(self.root, ignore_errors=True)


def _descendants(roots: list[int], only: str) -> list[int]:
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
        names[int(entry.name)] = cmd
    out: list[int] = []
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if only in names.get(child, "") or names.get(child, "").startswith("pg_autoctl"):
                out.append(child)
            todo.append(child)
    return out


def _wait_gone(root: Path, timeout: float = 15) -> None:
    """Until no process has its working directory or data under ``root``."""
    deadline = time.monotonic() + timeout
    prefix = str(root)
    while time.monotonic() < deadline:
        alive = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if prefix in cmd:
                alive.append(int(entry.name))
        if not alive:
            return
        for pid in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


async def _until(probe: Any, what: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            last = await probe()
            if last:
                return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last={last!r})")


def _wait(formation: Formation, what: str, ok: Any, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        for node in (formation.monitor, *formation.nodes):
            if node.proc is not None and node.proc.poll() is not None:
                raise AssertionError(f"{node.name} exited:\n{node.log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {formation.state()}")
        time.sleep(0.2)


@contextlib.contextmanager
def formation() -> Iterator[Formation]:
    """Monitor + primary + synchronous standby, ready for writes; always torn down."""
    autoctl = require_pg_auto_failover()
    root = Path(tempfile.mkdtemp(prefix="rcvpaf", dir="/tmp"))
    user = devdb._runas_user()
    if user:
        pw = pwd.getpwnam(user)
        os.chown(root, pw.pw_uid, pw.pw_gid)
        devdb._open_parents(root.parent)
    mon = Node("monitor", devdb.free_port(), root / "monitor", root / "monitor.log")
    f = Formation(root=root, autoctl=autoctl, user=user, monitor=mon)
    try:
        (root / "run").mkdir()
        if user:
            os.chown(root / "run", pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
        monitor_block = one_block("docs/high-availability.md", "pg_autoctl create monitor", "bash").text
        f.run_block(monitor_block, mon, f.env)
        mon_dsn = f"postgresql://postgres@127.0.0.1:{mon.port}/pg_auto_failover"
        tuning = one_block("docs/high-availability.md", "pgautofailover.health_check_period", "sql").text

        async def tune() -> None:
            conn = await _until(lambda: asyncpg.connect(mon_dsn, timeout=2), "the monitor", 60)
            try:
                for statement in tuning.split(";"):
                    if statement.strip():
                        await conn.execute(statement)
            finally:
                await conn.close()

        asyncio.run(tune())
        node_block = one_block("docs/high-availability.md", "pg_autoctl create postgres", "bash").text
        for i in (1, 2):
            node = Node(f"node{i}", devdb.free_port(), root / f"node{i}", root / f"node{i}.log")
            f.nodes.append(node)
            f.run_block(node_block, node, f.node_env(node), checkpoint=f.nodes[0] if i == 2 else None)
            if i == 1:
                _wait(f, "node1 to be writable",
                      lambda: f.node_state(f.nodes[0])[0] in ("single", "wait_primary"))
                # Speed only (not on the page): kill -9 keeps the OS page cache.
                asyncio.run(_until(
                    lambda: _exec(f.dsn(f.nodes[0], "postgres"),
                                  "ALTER SYSTEM SET fsync = off", "SELECT pg_reload_conf()"),
                    "node1 to accept connections", 60,
                ))

        _wait(f, "a primary and a secondary", lambda: sorted(
            f.node_state(n)[0] or "" for n in f.nodes) == ["primary", "secondary"])
        primary = f.primary()

        async def synchronous() -> bool:
            rows = await f.fetch(primary, "SELECT current_setting('synchronous_standby_names') AS s, "
                                 "(SELECT count(*) FROM pg_stat_replication WHERE sync_state IN "
                                 "('sync', 'quorum')) AS n")
            return bool(rows[0]["s"]) and rows[0]["n"] == 1

        asyncio.run(_until(synchronous, "a synchronous standby", 60))
        yield f
    finally:
        f.close()


async def _exec(dsn: str, *statements: str) -> bool:
    conn = await asyncpg.connect(dsn, timeout=3)
    try:
        for sql in statements:
            await conn.execute(sql)
    finally:
        await conn.close()
    return True
