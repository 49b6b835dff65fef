"""Group commit: one transaction for every event that arrives while the previous one commits.

Each request submits its events as a group and awaits its own future; the writer task takes
every group queued so far (up to ``batch_max_events``), commits them in one transaction and
only then resolves the futures. A request is therefore acknowledged only after its events are
durable, while N concurrent requests cost one commit instead of N. At low load a batch holds
a single request and nothing waits for a timer.

A group is never split across transactions, so a request is either wholly committed or
wholly failed. If a batch fails for a reason other than the database being unreachable, its
groups are retried one by one, so a single poisonous event fails only its own request.

With a synchronous standby, "committed" means the standby has it too: a commit whose wait for
the standby was cancelled is answered 503, not 200 (receiver.storage.replication), and a batch
of nothing but duplicates commits a barrier first, since the original commit of those events
may be one whose wait was cancelled. A request waits at most ``timeout`` seconds for its
commit (a failover, a lost standby): then it gets a 503 and the writer skips its group if it
has not started it yet; if it has, the events may be stored, and PostHog's retry is then
answered as a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from receiver.delivery.wire import StreamRow
from receiver.errors import ReceiverError, UnavailableError
from receiver.storage import replication, store
from receiver.storage.store import Appended, Pending

log = logging.getLogger("receiver.writer")

RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock, serialization failure


class MonotonicClock:
    """Wall-clock receive times that strictly increase within this process.

    ``received_at`` doubles as the frame's ``forwarded_at``, which the SDK expects to be unique
    per session; two events in the same microsecond would otherwise collide.
    """

    def __init__(self) -> None:
        self._last_us = 0

    def now(self) -> datetime:
        # Whole microseconds (what timestamptz keeps): a float "+1e-6" rounded back onto the
        # previous microsecond for calls made back to back.
        t = time.time_ns() // 1000
        if t <= self._last_us:
            t = self._last_us + 1
        self._last_us = t
        return _EPOCH + timedelta(microseconds=t)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class _Group:
    items: Sequence[Pending]
    future: asyncio.Future[list[Appended]]


class Writer:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        max_batch: int,
        on_commit: Callable[[dict[str, list[StreamRow]]], None],
        observe: Callable[[int, float], None] = lambda _n, _s: None,
        timeout: float = 5.0,  # seconds a request waits for its commit
    ) -> None:
        self.pool = pool
        self.max_batch = max_batch
        self.timeout = timeout
        self.on_commit = on_commit
        self.observe = observe
        # Runs on every group before it is queued (the runtime installs the privacy policy
        # here, so no route can store or stream an event that skipped it).
        self.prepare: Callable[[Sequence[Pending]], Awaitable[Sequence[Pending]]] | None = None
        # Called with (stored, duplicates) once a group is committed.
        self.counted: Callable[[int, int], None] = lambda _s, _d: None
        self.clock = MonotonicClock()
        self.accepting = True
        self._queue: deque[_Group] = deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="writer")

    async def submit(self, items: Sequence[Pending]) -> list[Appended]:
        if not self.accepting:
            raise UnavailableError("receiver is shutting down", retry_after=1)
        if not items:
            return []
        if self.prepare is not None:
            items = await self.prepare(items)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[Appended]] = loop.create_future()
        self._queue.append(_Group(items, fut))
        self._idle.clear()
        self._wakeup.set()
        # A timer rather than wait_for(shield(...)): one handle per request on the hot path.
        expiry = loop.call_later(self.timeout, _expire, fut)
        try:
            results = await fut
        finally:
            expiry.cancel()
        stored = sum(1 for r in results if r.position is not None)
        self.counted(stored, len(results) - stored)
        return results

    async def drain_and_close(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Refuse new work, commit everything already accepted, then stop."""
        self.accepting = False
        self._wakeup.set()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while self._queue:
            group = self._queue.popleft()
            if not group.future.done():
                group.future.set_exception(UnavailableError("receiver is shutting down", retry_after=1))

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                group = self._queue.popleft()
                if group.future.done():  # its request gave up (503) before we started it
                    continue
                groups = [group]
                size = len(group.items)
                while self._queue and size + len(self._queue[0].items) <= self.max_batch:
                    group = self._queue.popleft()
                    if group.future.done():
                        continue
                    groups.append(group)
                    size += len(group.items)
                await self._commit(groups)
            self._idle.set()

    async def _commit(self, groups: list[_Group]) -> None:
        started = time.perf_counter()
        try:
            results = await self._append([p for g in groups for p in g.items])
        except UnavailableError as exc:
            for g in groups:
                _fail(g, exc)
            return
        except Exception as exc:
            if len(groups) > 1:
                for g in groups:
                    await self._commit([g])
                return
            log.exception("append failed")
            _fail(groups[0], _as_unavailable(exc))
            return
        self.observe(sum(len(g.items) for g in groups), time.perf_counter() - started)
        committed: dict[str, list[StreamRow]] = {}
        offset = 0
        for g in groups:
            mine = results[offset : offset + len(g.items)]
            offset += len(g.items)
            for r in mine:
                if r.row is not None:
                    committed.setdefault(r.row.product_id, []).append(r.row)
            if not g.future.done():
                g.future.set_result(mine)
        for rows in committed.values():
            rows.sort(key=lambda r: r.position)
        try:
            self.on_commit(committed)
        except Exception:
            log.exception("fan-out after commit failed")

    async def _append(self, batch: list[Pending]) -> list[Appended]:
        for attempt in range(3):
            try:
                with store.unavailable("committing events"):
                    async with self.pool.acquire() as conn:
                        with replication.watch(conn) as commit:
                            results = await store.append(
                                conn, batch, origin=store.origin_of(self.pool)
                            )
                        if commit.cancelled:
                            raise UnavailableError(
                                "the synchronous standby did not confirm the commit",
                                retry_after=1,
                            )
                        if results and all(r.position is None for r in results):
                            # Nothing written, so nothing waited for the standby: make sure
                            # the first commit of these events is on it before a 200.
                            await replication.barrier(conn, self.timeout)
                        return results
            except asyncpg.PostgresError as exc:
                if getattr(exc, "sqlstate", None) in RETRYABLE_SQLSTATES and attempt < 2:
                    continue
                raise
        raise UnavailableError("could not commit events", retry_after=1)


def _as_unavailable(exc: Exception) -> ReceiverError:
    if isinstance(exc, ReceiverError):
        return exc
    # A failure we did not anticipate is still our fault: PostHog must retry, not drop.
    return UnavailableError("could not store the event", retry_after=1)


def _expire(fut: asyncio.Future[list[Appended]]) -> None:
    if not fut.done():
        fut.set_exception(
            UnavailableError("the database did not commit the events in time", retry_after=1)
        )


def _fail(group: _Group, exc: Exception) -> None:
    if not group.future.done():
        group.future.set_exception(exc)
