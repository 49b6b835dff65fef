"""What the synchronous standby has confirmed: nothing is acknowledged or streamed that a
failover could take back.

Postgres makes a commit visible on the primary *before* the synchronous standby has it in two
cases: the committing session's wait for the standby is cancelled (a statement timeout, a
client that goes away, ``pg_cancel_backend``), or the primary dies during that wait and the
orphaned backend finishes the commit. The session then sees a WARNING (SQLSTATE 01000,
"canceling wait for synchronous replication … already committed locally") or nothing at all;
every other session simply sees the rows. If the standby is promoted without them, position
N is handed out again to another event, and a subscriber that read N from the old primary
would hold a *phantom*: an event that no longer exists, at a position that now means another.

So every path that serves events checks, on the same server it read from, that a synchronous
standby has confirmed a WAL position at least as far as what it read:

* Reads carry :data:`SEEN_COLUMNS` (evaluated after the statement's snapshot, so ``lsn`` is at
  or past the commit record of everything the statement saw): the server's identity, its WAL
  insert position, and whether synchronous replication is configured at all.
* :class:`Confirmer` answers "has the standby confirmed ``lsn`` on ``server``?" by running a
  *barrier*: a one-row write whose commit waits for the synchronous standby like any other.
  Its success confirms everything before it in the WAL. One barrier is in flight per process
  at a time and every reader waiting meanwhile shares it (a group commit for confirmations).
* A write whose wait was cancelled is recognised by its WARNING (:func:`watch`): the writer
  answers 503 instead of 200 and streams nothing.

With ``synchronous_standby_names`` empty (one node, or pg_auto_failover's ``wait_primary``
while the standby is away) there is nothing to wait for: reads are served as committed, no
barrier runs, and the single-node path costs nothing more than three function calls per read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg

from receiver.errors import UnavailableError

log = logging.getLogger("receiver.replication")

# The server a statement ran on: a promoted standby, or the same node after a restart, is a
# different server (LSNs of two servers must never be compared).
SERVER_SQL = (
    "concat_ws(' ', inet_server_addr(), inet_server_port(), "
    "extract(epoch FROM pg_postmaster_start_time()))"
)
SEEN_COLUMNS = (
    "current_setting('synchronous_standby_names') = '' AS unsynced, "
    f"pg_current_wal_insert_lsn() AS lsn, {SERVER_SQL} AS server"
)

# A write that is skipped when no synchronous standby is configured. Slots (64 rows) bound the
# table; two backends on one slot simply take turns. ``set_config(..., true)`` makes this
# transaction wait for the standby even where the server default is synchronous_commit=local.
BARRIER_SQL = f"""
WITH w AS (
    INSERT INTO replication_barrier AS b (slot, confirmed_at)
    SELECT pg_backend_pid() % 64, now()
    WHERE current_setting('synchronous_standby_names') <> ''
      AND set_config('synchronous_commit', 'on', true) IS NOT NULL
    ON CONFLICT (slot) DO UPDATE SET confirmed_at = excluded.confirmed_at
    RETURNING 1
)
SELECT {SERVER_SQL} AS server, pg_current_wal_insert_lsn() AS lsn,
       (SELECT count(*) FROM w) = 0 AS unsynced
"""  # noqa: S608 - constant text


@dataclass(frozen=True, slots=True)
class Seen:
    """Where a read happened: the server, its WAL position then, and whether it had a
    synchronous standby configured."""

    server: str
    lsn: int
    unsynced: bool

    @classmethod
    def of(cls, row: Any) -> Seen:
        return cls(server=row["server"], lsn=int(row["lsn"]), unsynced=bool(row["unsynced"]))


# --------------------------------------------------------------------------- cancelled waits


class Watch:
    """Notices, during one statement, the WARNING of a cancelled wait for the standby."""

    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def on_log(self, _conn: Any, message: Any) -> None:
        # The text is translated with lc_messages: any 01000 WARNING during our own statement
        # is taken as "not confirmed". That fails safe (a 503, which PostHog retries).
        if getattr(message, "sqlstate", None) == "01000":
            self.cancelled = True
            log.warning(
                "commit not confirmed by the synchronous standby: %s",
                getattr(message, "message", ""),
            )


@contextlib.contextmanager
def watch(conn: Any) -> Iterator[Watch]:
    """``with watch(conn) as w: await <statement>`` then ``w.cancelled``.

    The listener lives only for the statement (a pool connection released with a listener
    on it makes asyncpg warn on every release). asyncpg hands WARNINGs to listeners with
    ``call_soon`` before it wakes the awaiting task, so when the statement has returned its
    WARNING has been seen.
    """
    w = Watch()
    conn.add_log_listener(w.on_log)
    try:
        yield w
    finally:
        conn.remove_log_listener(w.on_log)


# --------------------------------------------------------------------------- barriers


async def barrier(conn: Any, timeout: float) -> tuple[str, int]:  # noqa: ASYNC109
    """Commit a barrier on ``conn``; returns (server, lsn) the standby has now confirmed.

    Raises :class:`UnavailableError` when the standby did not confirm (timeout, cancelled
    wait, lost connection): the caller must not serve what it read.
    """
    try:
        with watch(conn) as w:
            row = await conn.fetchrow(BARRIER_SQL, timeout=timeout)
    except (TimeoutError, OSError, asyncpg.InterfaceError, asyncpg.PostgresError) as exc:
        raise UnavailableError(
            "the synchronous standby has not confirmed recent commits", retry_after=1
        ) from exc
    if w.cancelled:
        raise UnavailableError("the synchronous standby has not confirmed recent commits", retry_after=1)
    return row["server"], int(row["lsn"])


class Confirmer:
    """Confirmations shared by every reader of a process (one barrier in flight at a time)."""

    def __init__(self, pool: Any, timeout: float) -> None:
        self.pool = pool
        self.timeout = timeout
        self.barriers = 0  # barriers committed (metrics, tests)
        self.refused = 0  # reads not confirmed in time (their rows were not served)
        self._confirmed: dict[str, int] = {}
        self._task: asyncio.Task[tuple[str, int]] | None = None

    def confirmed(self, seen: Seen) -> bool:
        return seen.unsynced or self._confirmed.get(seen.server, -1) >= seen.lsn

    async def confirm(self, seen: Seen) -> None:
        """Return once a synchronous standby has what ``seen`` saw; else UnavailableError."""
        if self.confirmed(seen):
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        try:
            while not self.confirmed(seen):
                task = self._task
                if task is None or task.done():
                    task = self._task = loop.create_task(self._barrier())
                    task.add_done_callback(_consume)
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise UnavailableError("the synchronous standby has not confirmed", retry_after=1)
                try:
                    server, _lsn = await asyncio.wait_for(asyncio.shield(task), remaining)
                except TimeoutError:
                    raise UnavailableError(
                        "the synchronous standby has not confirmed", retry_after=1
                    ) from None
                if server != seen.server and not self.confirmed(seen):
                    # The pool now reaches another server: what was read on the old one may
                    # not exist here. The caller reads again.
                    raise UnavailableError("the primary changed under a read", retry_after=1)
        except UnavailableError:
            self.refused += 1
            raise

    async def _barrier(self) -> tuple[str, int]:
        try:
            async with self.pool.acquire() as conn:
                server, lsn = await barrier(conn, self.timeout)
        except (TimeoutError, OSError, asyncpg.InterfaceError, asyncpg.PostgresError) as exc:
            raise UnavailableError("database unavailable while confirming", retry_after=1) from exc
        self.barriers += 1
        if lsn > self._confirmed.get(server, -1):
            self._confirmed[server] = lsn
        return server, lsn


def _consume(task: asyncio.Task[Any]) -> None:
    # Waiters may all have timed out: retrieve the exception so it is not reported as lost.
    if not task.cancelled():
        task.exception()
