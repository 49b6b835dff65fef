"""One long-lived connection that follows the primary across failovers.

The pool follows the primary by itself: every new connection goes through the URI's host list
with ``target_session_attrs=read-write``, and a connection to a dead server fails and is
replaced. A *long-lived* connection (the hub's LISTEN, the push deliverer's) needs more: it
must notice that its server is gone or is no longer the primary even when no query is running
on it, and then connect again, to whichever host is the primary now. :class:`PrimaryLink`
does that for any such user:

* connects through the URI (host list, ``target_session_attrs``) and refuses a server in
  recovery, whatever the URI says;
* hands the connection to ``on_connect`` (e.g. ``add_listener``), which must also re-read
  whatever may have changed while nobody was listening;
* waits for the connection to be terminated, and every ``check_seconds`` probes it with
  ``SELECT pg_is_in_recovery()`` bounded by ``timeout``: a dead host that sent no RST, or a
  demoted node, is detected within ``check_seconds + timeout``;
* calls ``on_lost``, then reconnects with backoff (0.1 s doubling to 2 s) until stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable

import asyncpg

log = logging.getLogger("receiver.primary")


class NotPrimaryError(RuntimeError):
    pass


class PrimaryLink:
    def __init__(
        self,
        dsn: str,
        *,
        name: str,
        on_connect: Callable[[asyncpg.Connection], Awaitable[None]],
        on_lost: Callable[[], None] = lambda: None,
        check_seconds: float = 5.0,
        timeout: float = 5.0,
    ) -> None:
        self.dsn = dsn
        self.name = name
        self.on_connect = on_connect
        self.on_lost = on_lost
        self.check_seconds = check_seconds
        self.timeout = timeout
        self.connection: asyncpg.Connection | None = None
        self.connects = 0  # successful connections (tests, metrics)
        self._closed = asyncio.Event()

    async def run(self) -> None:
        """Keep a connection to the primary until :meth:`close` (or cancellation)."""
        backoff = 0.1
        while not self._closed.is_set():
            try:
                conn = await asyncpg.connect(self.dsn, timeout=self.timeout)
                self.connection = conn
                if await conn.fetchval("SELECT pg_is_in_recovery()", timeout=self.timeout):
                    raise NotPrimaryError("connected to a standby")
                await self.on_connect(conn)
                self.connects += 1
                backoff = 0.1
                await self._hold(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure means: reconnect later
                log.warning("%s connection lost: %s", self.name, type(exc).__name__)
            finally:
                if self.connection is not None:
                    with contextlib.suppress(Exception):
                        self.connection.terminate()
                    self.connection = None
                    self.on_lost()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), backoff)
            backoff = min(backoff * 2, 2.0)

    async def _hold(self, conn: asyncpg.Connection) -> None:
        lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        conn.add_termination_listener(functools.partial(_resolve, lost))
        while not self._closed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(lost), self.check_seconds)
            if lost.done() or conn.is_closed():
                return
            # Idle for a while: is the server still there, and still the primary?
            if await conn.fetchval("SELECT pg_is_in_recovery()", timeout=self.timeout):
                raise NotPrimaryError("the server is now a standby")

    async def close(self) -> None:
        self._closed.set()
        conn = self.connection
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)


def _resolve(future: asyncio.Future[None], *_args: object) -> None:
    if not future.done():
        future.set_result(None)
