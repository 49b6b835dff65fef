"""Push delivery in one receiver process: which endpoints it delivers, and their progress.

Exactly one deliverer per endpoint, across processes and hosts: a process delivers an endpoint
only while it holds that endpoint's session-level advisory lock, ``(PUSH_LOCK_CLASS, id)``,
on one dedicated connection (the *lock connection*). Every ``RECEIVER_PUSH_CLAIM_SECONDS``
(and whenever a product changes) each process tries to take the locks nobody holds; the
first one wins. When a holder dies, Postgres ends its session and releases its locks, and
another process takes them on its next pass: within a few seconds after a crash or a
``kill -9``, and after the TCP keepalives below (about 25 s) when the holder's host vanishes.

Progress is written on the lock connection too, by one flusher for all of the process's
endpoints (a group commit). So a process that has lost its locks cannot write progress any
more: its flush fails, it drops every deliverer, and whoever holds the locks now goes on
from the durable cursors. Until it notices, it may send a payload the new holder sends too:
delivery is at least once, and both carry the same ``webhook-id``.

Own resources, so that a slow or dead endpoint never slows ingest or the streams: its own
tasks, its own small pool (``RECEIVER_PUSH_DB_CONNECTIONS``) plus the lock connection, a
bounded number of requests in flight (``RECEIVER_PUSH_MAX_CONNECTIONS``), each with a
deadline (``RECEIVER_PUSH_TIMEOUT_SECONDS``). Deliverers wake on the hub's notifications of
new events (local commits and other processes' NOTIFY), and poll every
``RECEIVER_POLL_SECONDS`` as a backstop.

All connection handling is here, in :meth:`PushService._connect` and the pool creation, so
that following a new primary after a failover is one place to change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from typing import Any

import asyncpg

from receiver.delivery.push import destination, outbox, policy
from receiver.delivery.push.deliverer import Deliverer, Options, Taken
from receiver.delivery.push.outbox import Flush
from receiver.delivery.push.sender import Sender
from receiver.ops.metrics import Metrics
from receiver.settings import Settings
from receiver.storage import store
from receiver.storage.replication import Confirmer

log = logging.getLogger("receiver.push")

# The lock connection's server-side TCP keepalives: Postgres drops the session (and so the
# locks) of a holder whose host vanished after about idle + interval × count seconds.
KEEPALIVES = {"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "3"}
STOP_GRACE_SECONDS = 3.0
# At most one progress write per this many seconds per process: under load each write covers
# many payloads (less CPU per payload); a crash re-sends at most this much more.
FLUSH_INTERVAL_SECONDS = 0.01


class PushService:
    def __init__(self, settings: Settings, *, database_url: str, metrics: Metrics) -> None:
        self.settings = settings
        self.database_url = database_url
        self.metrics = metrics
        self.options = Options(
            limits=policy.Limits(
                max_attempts=settings.push_max_attempts,
                max_age_seconds=settings.push_max_age_seconds,
                backoff_base_seconds=settings.push_backoff_base_seconds,
                backoff_max_seconds=settings.push_backoff_max_seconds,
            ),
            send_bearer=settings.push_send_bearer,
            allowed_hosts=destination.parse_allowed_hosts(settings.push_allowed_hosts),
            poll_seconds=settings.poll_seconds,
            max_in_flight=settings.push_max_in_flight,
        )
        self.deliverers: dict[int, Deliverer] = {}
        self._by_product: dict[str, Deliverer] = {}
        self._conn: asyncpg.Connection | None = None
        self._conn_lock = asyncio.Lock()
        self._flush_lock = asyncio.Lock()  # one flush at a time, so they land in order
        self._rescan = asyncio.Event()
        self._dirty = asyncio.Event()
        self._closed = False
        self._tasks: list[asyncio.Task[None]] = []
        self.pool: Any = None
        self.sender: Sender | None = None
        self.confirmer: Confirmer | None = None
        self.claimed = asyncio.Event()  # set after every claim pass (tests wait on it)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        # min_size 0: a receiver with no push endpoint holds no connection for it.
        self.pool = await store.create_pool(
            self.database_url, max_size=self.settings.push_db_connections,
            timeout=self.settings.db_timeout_seconds,
        )
        # Its own confirmations, on its own pool (a barrier is a write: see storage.replication).
        self.confirmer = Confirmer(self.pool, self.settings.db_timeout_seconds)
        self.sender = Sender(
            timeout=self.settings.push_timeout_seconds,
            max_connections=self.settings.push_max_connections,
        )
        self._tasks = [
            asyncio.create_task(self._claim_forever(), name="push-claim"),
            asyncio.create_task(self._flush_forever(), name="push-flush"),
        ]

    async def close(self) -> None:
        """Finish requests in flight (briefly), write the progress, release the locks."""
        self._closed = True
        self._tasks[0].cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._tasks[0]
        await asyncio.gather(
            *(d.stop(STOP_GRACE_SECONDS) for d in list(self.deliverers.values())),
            return_exceptions=True,
        )
        self._tasks[1].cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._tasks[1]
        with contextlib.suppress(Exception):
            await self._flush_once()
        for d in self.deliverers.values():
            self.metrics.push_forget(d.product_id)
        self.deliverers.clear()
        self._by_product.clear()
        await self._drop_connection()
        if self.pool is not None:
            try:
                await asyncio.wait_for(self.pool.close(), 5)
            except (TimeoutError, Exception):  # noqa: BLE001 - never hang shutdown
                self.pool.terminate()
        if self.sender is not None:
            await self.sender.close()

    # ------------------------------------------------------------------ wake-ups

    def heads(self, heads: Mapping[str, object]) -> None:
        """New committed heads (the hub's notifications): wake those products' deliverers."""
        for product_id, position in heads.items():
            d = self._by_product.get(product_id)
            if d is not None and isinstance(position, int):
                d.head_at_least(position)

    def products_changed(self, product_id: str | None) -> None:
        """A product (or, None, any) changed: its endpoint may be new, changed or gone."""
        targets = self.deliverers.values() if product_id is None else filter(
            None, [self._by_product.get(product_id)]
        )
        for d in list(targets):
            d.reload()
        self._rescan.set()

    def _mark_dirty(self) -> None:
        self._dirty.set()

    def _gone(self, _endpoint_id: int) -> None:
        self._rescan.set()

    # ------------------------------------------------------------------ the lock connection

    async def _connect(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(
            store.asyncpg_dsn(self.database_url),
            timeout=self.settings.db_timeout_seconds,
            command_timeout=max(self.settings.db_timeout_seconds * 2, 10),
            server_settings={
                "application_name": f"{outbox.APPLICATION_NAME}:{os.getpid()}",
                **KEEPALIVES,
            },
        )
        conn.add_termination_listener(self._on_terminated)
        return conn

    def _on_terminated(self, conn: object) -> None:
        if conn is self._conn:
            asyncio.get_running_loop().create_task(self._lose_all("lock connection lost"))

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            await asyncio.wait_for(conn.close(), 2)
        except (TimeoutError, Exception):  # noqa: BLE001 - terminate releases the locks too
            conn.terminate()

    async def _lose_all(self, why: str) -> None:
        """Our locks are gone (or may be): stop every deliverer at once, write nothing more."""
        if self.deliverers:
            log.warning("push: dropping %d endpoint(s): %s", len(self.deliverers), why)
        deliverers = list(self.deliverers.values())
        self.deliverers.clear()
        self._by_product.clear()
        for d in deliverers:
            self.metrics.push_forget(d.product_id)
        await asyncio.gather(*(d.stop(0) for d in deliverers), return_exceptions=True)
        await self._drop_connection()
        self._rescan.set()

    # ------------------------------------------------------------------ claiming

    async def _claim_forever(self) -> None:
        backoff = 0.2
        while not self._closed:
            try:
                await self._claim_once()
                backoff = 0.2
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database is away: retry later
                log.warning("push: claiming endpoints failed: %s", type(exc).__name__)
                await self._lose_all(f"claim failed ({type(exc).__name__})")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            self.claimed.set()
            self._rescan.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._rescan.wait(), self.settings.push_claim_seconds)

    async def _claim_once(self) -> None:
        if self._conn is not None and self._conn.is_closed():
            await self._lose_all("lock connection closed")
        if self._conn is None:
            self._conn = await self._connect()
        await self._reap()
        async with self._conn_lock:
            assert self._conn is not None
            won = await outbox.try_claim(self._conn, list(self.deliverers))
        for endpoint_id in won:
            await self._begin(endpoint_id)

    async def _begin(self, endpoint_id: int) -> None:
        async with self.pool.acquire() as conn:
            endpoint = await outbox.load(conn, endpoint_id)
            if endpoint is not None:
                await outbox.prune_attempts(conn, endpoint_id, self.settings.push_attempts_kept)
        if endpoint is None:
            await self._release(endpoint_id)
            return
        assert self.sender is not None
        d = Deliverer(
            endpoint, pool=self.pool, sender=self.sender, options=self.options,
            metrics=self.metrics, on_dirty=self._mark_dirty, on_gone=self._gone,
            confirmer=self.confirmer,
        )
        self.deliverers[endpoint_id] = d
        self._by_product[endpoint.product_id] = d
        log.info("push: delivering %s from position %d", endpoint.product_id, endpoint.cursor)
        d.start()

    async def _reap(self) -> None:
        """Release the endpoints whose deliverer has ended (endpoint deleted, or a failure)."""
        for endpoint_id, d in list(self.deliverers.items()):
            if d.task is not None and d.task.done():
                await self._flush_once()
                del self.deliverers[endpoint_id]
                if self._by_product.get(d.product_id) is d:
                    del self._by_product[d.product_id]
                self.metrics.push_forget(d.product_id)
                await self._release(endpoint_id)

    async def _release(self, endpoint_id: int) -> None:
        async with self._conn_lock:
            if self._conn is not None:
                await outbox.release(self._conn, endpoint_id)

    # ------------------------------------------------------------------ flushing

    async def _flush_forever(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._flush_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the lock connection is in doubt
                log.warning("push: writing progress failed: %s", type(exc).__name__)
                await self._lose_all(f"progress not written ({type(exc).__name__})")
            await asyncio.sleep(FLUSH_INTERVAL_SECONDS)  # pacing, not synchronization

    async def _flush_once(self) -> None:
        async with self._flush_lock:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        taken: list[tuple[Deliverer, Taken]] = []
        for d in list(self.deliverers.values()):
            t = d.take()
            if t is not None:
                taken.append((d, t))
        if not taken:
            return
        batch = Flush()
        for _d, t in taken:
            batch.updates.append(t.update)
            batch.attempts.extend(t.attempts)
            batch.dead.extend(t.dead)
            batch.redelivered.extend(t.redelivered)
        async with self._conn_lock:
            if self._conn is None:
                raise ConnectionError("no lock connection")
            stored = await outbox.flush(self._conn, batch, ring=self.settings.push_attempts_kept)
        for d, t in taken:
            d.flushed(t, stored.get(d.ep.id))
