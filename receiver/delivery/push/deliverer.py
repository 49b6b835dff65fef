"""The deliverer of one push endpoint: its payloads, sent in position order, at most
``max_in_flight`` at a time, never two of one session at once.

A deliverer runs only in the process holding its endpoint's advisory lock (see ``service``).
It reads the product's events after its cursor in pages from its own pool into a window of
*slots* (at most ``page`` events ahead of the cursor), and POSTs each actions payload (the SSE
frame's JSON object, serialized once and signed over those exact bytes). Requests start in
position order; a slot may start only when every earlier slot of its session is settled
(answered 2xx or dead-lettered), so each session's payloads arrive one after the other, in
order. With ``max_in_flight`` 1 nothing overtakes: the endpoint gets everything in position
order, one at a time. Internal events (``$identify`` and such), which the stream never shows,
are passed over.

The cursor is the position before the first unsettled slot: it only moves over settled
payloads. After an attempt fails with an answer that is retried (5xx, 408, 429, no answer),
the deliverer *probes*: one request at a time, the oldest payload first, until one is
answered 2xx, which opens the window again. An endpoint that is down therefore uses up one
payload's attempts at a time, as it would with ``max_in_flight`` 1, instead of every
session's at once (which would dead-letter most of a long outage's backlog).

Progress (cursor, the retry state of the payload after it, attempts, dead letters) is written
by the service's flusher, batched with every other endpoint's, on the lock's own connection.
A crash therefore re-sends what was in flight, what was settled past a retried payload, and
what was acknowledged in the last moment (progress not written yet), each with its
``webhook-id``, and loses nothing. A deliverer stays at most ``max_ahead`` positions ahead of
its durable cursor.

``receiver push retry`` queues dead letters again; they are sent, one at a time, before
anything newer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import orjson

from receiver.delivery.push import outbox, policy, signing
from receiver.delivery.push.destination import host_allowed, redact_url, url_host
from receiver.delivery.push.outbox import AttemptRecord, DeadLetter, Endpoint, EndpointUpdate
from receiver.delivery.push.policy import Verdict
from receiver.delivery.push.sender import Answer, Sender
from receiver.delivery.wire import StreamRow, actions_payload
from receiver.errors import UnavailableError
from receiver.ingest.normalize import is_streamed
from receiver.ops.metrics import Metrics
from receiver.storage.replication import Confirmer

log = logging.getLogger("receiver.push")

VISIBILITY_RETRY_SECONDS = 0.005


@dataclass(frozen=True, slots=True)
class Options:
    limits: policy.Limits  # the installation defaults; an endpoint may override two of them
    send_bearer: bool
    allowed_hosts: tuple[str, ...]
    poll_seconds: float
    max_in_flight: int = 8  # the installation default; an endpoint may override it
    page: int = 256
    max_ahead: int = 1024


@dataclass(slots=True)
class Taken:
    """A deliverer's progress handed to the flusher."""

    update: EndpointUpdate
    attempts: list[AttemptRecord]
    dead: list[DeadLetter]
    redelivered: list[tuple[int, int]]
    settling: frozenset[int]  # redeliveries whose outcome this flush writes (or an earlier one)


@dataclass(slots=True, eq=False)
class Slot:
    """An event read and not yet settled (delivered or dead-lettered)."""

    row: StreamRow
    session: str
    failures: int = 0
    first_attempt_at: float | None = None
    next_attempt_at: float | None = None
    in_flight: bool = False
    body: bytes | None = None


class Deliverer:
    def __init__(
        self,
        endpoint: Endpoint,
        *,
        pool: asyncpg.Pool,
        sender: Sender,
        options: Options,
        metrics: Metrics,
        on_dirty: Callable[[], None],
        on_gone: Callable[[int], None],
        confirmer: Confirmer | None = None,
    ) -> None:
        self.ep = endpoint
        self.confirmer = confirmer
        self.pool = pool
        self.sender = sender
        self.options = options
        self.metrics = metrics
        self.on_dirty = on_dirty
        self.on_gone = on_gone
        self.cursor = endpoint.cursor  # settled (delivered or given up on) through here
        self.durable = endpoint.cursor  # ... and written to the database through here
        self.head = endpoint.cursor
        self.seq = endpoint.attempts_logged
        self.blocked: str | None = None
        # The window: unsettled events read, in position order (dicts keep insertion order),
        # and each session's unsettled positions in order.
        self._slots: dict[int, Slot] = {}
        self._sessions: dict[str, deque[int]] = {}
        self._read_to = endpoint.cursor  # everything up to here is read (or known gone)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._probing = endpoint.attempts > 0  # the last answer was a retryable failure
        # The retry state the database holds for the payload after the cursor (a restart
        # goes on with its attempts and schedule).
        self._resume = (endpoint.cursor + 1, endpoint.attempts, endpoint.first_attempt_at,
                        endpoint.next_attempt_at) if endpoint.attempts else None
        self._wake = asyncio.Event()
        self._flushed = asyncio.Event()
        self._read_due = True
        self._soon = False  # what we were told of is not visible yet: look again shortly
        self._reload_due = False
        self._redeliveries_due = True
        self._recheck_after_flush = False
        # Redelivered or re-parked positions whose outcome is not written yet: the queue in
        # the database still lists them, and must not make us send them again.
        self._settling: set[int] = set()
        self._stopping = False
        self.task: asyncio.Task[None] | None = None
        # Progress not yet taken by the flusher.
        self._dirty = False
        self._delivered = 0
        self._dead_count = 0
        self._records: list[AttemptRecord] = []
        self._dead: list[DeadLetter] = []
        self._redelivered: list[tuple[int, int]] = []
        self._last: tuple[int | None, str | None, float] | None = None  # status, error, at
        self._last_success_at: float | None = None

    @property
    def product_id(self) -> str:
        return self.ep.product_id

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"push-{self.product_id}")

    def head_at_least(self, position: int) -> None:
        if position > self.head:
            self.head = position
            self._read_due = True
            self.metrics.push_lag(self.product_id, max(self.head - self.cursor, 0))
            self._wake.set()

    def reload(self) -> None:
        """The endpoint changed (registration, rotation, retry, skip): read it again."""
        self._reload_due = True
        self._redeliveries_due = True
        self._wake.set()

    async def stop(self, grace: float) -> None:
        """Let the requests out finish (within ``grace`` seconds), then stop."""
        self._stopping = True
        self._wake.set()
        if self.task is None:
            return
        with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
            await asyncio.wait_for(asyncio.shield(self.task), grace)
        if not self.task.done():
            for request in list(self._in_flight):
                request.cancel()
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task

    # ------------------------------------------------------------------ flushing

    def take(self) -> Taken | None:
        if not self._dirty:
            return None
        last_status, last_error, last_at = self._last or (None, None, None)
        first = self._slots.get(self.cursor + 1)
        failing = first is not None and first.failures > 0
        taken = Taken(
            update=EndpointUpdate(
                endpoint_id=self.ep.id, cursor=self.cursor,
                attempts=first.failures if failing and first else 0,
                first_attempt_at=first.first_attempt_at if failing and first else None,
                next_attempt_at=first.next_attempt_at if failing and first else None,
                last_status=last_status, last_error=last_error, last_attempt_at=last_at,
                last_success_at=self._last_success_at, delivered=self._delivered,
                dead=self._dead_count, logged=len(self._records),
            ),
            attempts=self._records, dead=self._dead, redelivered=self._redelivered,
            settling=frozenset(self._settling),
        )
        self._dirty = False
        self._delivered = self._dead_count = 0
        self._records, self._dead, self._redelivered = [], [], []
        self._last = None
        self._last_success_at = None
        return taken

    def flushed(self, taken: Taken, stored_cursor: int | None) -> None:
        self.durable = max(self.durable, taken.update.cursor)
        self._settling -= taken.settling
        if self._recheck_after_flush and not self._settling:
            # The outcomes of the last redeliveries are written: the queue can be read again.
            self._recheck_after_flush = False
            self._redeliveries_due = True
            self._wake.set()
        if stored_cursor is not None and stored_cursor > self.cursor:
            self._jump(stored_cursor)
        self._flushed.set()

    def _mark(self) -> None:
        if not self._dirty:
            self._dirty = True
        self.on_dirty()

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        try:
            while not self._stopping:
                self._wake.clear()
                if self._reload_due and not await self._reload():
                    return
                if self._redeliveries_due:
                    if self._in_flight:  # redeliveries go alone: let the window drain first
                        await self._wait(None, self.options.poll_seconds)
                    else:
                        await self._redeliver()
                    continue
                if self.cursor - self.durable >= self.options.max_ahead:
                    self._flushed.clear()
                    await self._wait(self._flushed.wait(), self.options.poll_seconds)
                    continue
                await self._fill()
                soon, self._soon = self._soon, False
                if not self._slots:
                    await self._wait(None, VISIBILITY_RETRY_SECONDS if soon else self.options.poll_seconds)
                    self._read_due = True
                    continue
                if not self._allowed():
                    await self._wait(None, self.options.poll_seconds)
                    continue
                next_due = self._launch()
                timeout = self.options.poll_seconds if next_due is None else next_due - time.time()
                await self._wait(None, min(timeout, self.options.poll_seconds))
        except asyncio.CancelledError:
            raise
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # The database went away: the service notices the task ended and claims the
            # endpoint again (from the durable cursor) once it is back.
            log.warning("push deliverer for %s stopped: %s", self.product_id, type(exc).__name__)
        except Exception:
            log.exception("push deliverer for %s stopped", self.product_id)
        finally:
            # Stopping: the requests out finish (each within its deadline) unless stop()
            # cancels them; their outcomes count as long as we are here to record them.
            if self._in_flight:
                await asyncio.gather(*self._in_flight, return_exceptions=True)

    def _max_in_flight(self) -> int:
        return self.ep.max_in_flight or self.options.max_in_flight

    def _launch(self) -> float | None:
        """Start every slot that may go now; returns when the next retry is due, if any."""
        limit = 1 if self._probing else self._max_in_flight()
        room = limit - len(self._in_flight)
        now = time.time()
        next_due: float | None = None
        for position, slot in self._slots.items():
            if room <= 0 or (limit == 1 and position != self.cursor + 1):
                break  # one at a time means strictly in position order: nothing overtakes
            if slot.in_flight or self._sessions[slot.session][0] != position:
                continue  # out already, or an earlier payload of its session is unsettled
            if slot.next_attempt_at is not None and slot.next_attempt_at > now:
                next_due = slot.next_attempt_at if next_due is None else min(next_due, slot.next_attempt_at)
                continue
            slot.in_flight = True
            task = asyncio.create_task(self._attempt(slot))
            self._in_flight.add(task)
            task.add_done_callback(self._landed)
            room -= 1
        return next_due

    def _landed(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._wake.set()

    async def _wait(self, aw: object, seconds: float) -> None:
        """Until woken (new events, a reload, a stop), ``aw`` completes, or ``seconds`` pass."""
        waiters = [asyncio.ensure_future(self._wake.wait())]
        if aw is not None:
            waiters.append(asyncio.ensure_future(aw))  # type: ignore[arg-type]
        try:
            await asyncio.wait(waiters, timeout=max(seconds, 0), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def _fill(self) -> None:
        """Read events into the window, if there is room and something new to read."""
        room = self.options.page - len(self._slots)
        # Read in pages: not before half the window is free (a read per settled payload was
        # a quarter of the deliverer's time in the profile).
        if room < self.options.page // 2 or not (self._read_due or self.head > self._read_to):
            return
        self._read_due = False
        async with self.pool.acquire() as conn:
            rows, seen = await outbox.read_events(conn, self.product_id, self._read_to, room)
        if seen is not None and self.confirmer is not None:
            try:
                await self.confirmer.confirm(seen)
            except UnavailableError:
                # Not confirmed by the synchronous standby (yet): send none of it, read again
                # shortly. After a failover the new primary's pool answers the next read.
                self._soon = True
                return
        if rows:
            for row in rows:
                if is_streamed(row.action_type):
                    self._add(row)
            self._read_to = rows[-1].position
            self.head_at_least(self._read_to)
            self._recompute_cursor()
            return
        if self.head > self._read_to:
            # A notification said there is more, but we see nothing: either it is not visible
            # to us yet (a listener can hear of a commit a moment before other sessions see
            # it), or retention / `receiver erase` removed those events before they were
            # delivered. Only the committed head read in the same snapshot as the events tells
            # the two apart: pass over positions only when they are truly gone.
            async with self.pool.acquire() as conn:
                head, more = await outbox.head_and_more(conn, self.product_id, self._read_to)
            if head is not None and head > self._read_to and not more:
                self._read_to = head
                self._recompute_cursor()
            else:
                self._soon = True

    def _add(self, row: StreamRow) -> None:
        session = row.session_id or ""
        slot = Slot(row, session)
        if self._resume is not None and self._resume[0] == row.position:
            _pos, slot.failures, slot.first_attempt_at, slot.next_attempt_at = self._resume
        self._resume = None
        self._slots[row.position] = slot
        self._sessions.setdefault(session, deque()).append(row.position)

    def _recompute_cursor(self) -> None:
        """The cursor: before the first unsettled slot, or everything read."""
        first = next(iter(self._slots), None)
        cursor = first - 1 if first is not None else self._read_to
        if cursor > self.cursor:
            self.cursor = cursor
            self.metrics.push_lag(self.product_id, max(self.head - self.cursor, 0))
            self._mark()

    def _allowed(self) -> bool:
        allowed = self.options.allowed_hosts
        host = url_host(self.ep.url)
        if not allowed or (host is not None and host_allowed(host, allowed)):
            self.blocked = None
            return True
        if self.blocked is None:
            self.blocked = f"host {host!r} is not in RECEIVER_PUSH_ALLOWED_HOSTS"
            log.warning("push to %s held back: %s", redact_url(self.ep.url), self.blocked)
            self._last = (None, self.blocked, time.time())
            self._mark()
        return False

    def _limits(self) -> policy.Limits:
        base = self.options.limits
        return policy.Limits(
            max_attempts=self.ep.max_attempts or base.max_attempts,
            max_age_seconds=self.ep.max_age_seconds or base.max_age_seconds,
            backoff_base_seconds=base.backoff_base_seconds,
            backoff_max_seconds=base.backoff_max_seconds,
        )

    # ------------------------------------------------------------------ one attempt

    async def _post(self, row: StreamRow, body: bytes) -> tuple[Answer, float]:
        now = time.time()
        headers = signing.request_headers(
            body, secrets=self.ep.live_secrets(now),
            msg_id=signing.message_id(self.product_id, row.position),
            timestamp=int(now), send_bearer=self.options.send_bearer,
        )
        answer = await self.sender.post(self.ep.url, body, headers)
        return answer, now

    def _record(self, position: int, answer: Answer, at: float, outcome: str) -> None:
        self._records.append(AttemptRecord(
            endpoint_id=self.ep.id, seq=self.seq, position=position, attempted_at=at,
            duration_ms=round(answer.seconds * 1000, 3), status=answer.status,
            error=answer.error, outcome=outcome,
        ))
        self.seq += 1
        self._last = (answer.status, answer.error, at)
        self.metrics.push_attempt(self.product_id, outcome, answer.seconds)

    async def _attempt(self, slot: Slot) -> None:
        row = slot.row
        if slot.body is None:
            slot.body = orjson.dumps(actions_payload(row))  # once: every retry sends these bytes
        try:
            answer, at = await self._post(row, slot.body)
        finally:
            slot.in_flight = False
        if self._slots.get(row.position) is not slot:
            # `receiver push skip` moved the cursor past it while the request was out: its
            # outcome no longer matters.
            self._record(row.position, answer, at, "delivered" if policy.verdict(answer.status)
                         is Verdict.DELIVERED else "retry")
            self._mark()
            return
        if slot.failures == 0:
            slot.first_attempt_at = at
        v = policy.verdict(answer.status)
        if v is Verdict.DELIVERED:
            self._probing = False
            self._record(row.position, answer, at, "delivered")
            self._delivered += 1
            self._last_success_at = at
            self.metrics.push_delivered(self.product_id, time.time() - row.received_at)
            self._settle(slot)
            return
        if v is Verdict.RETRY:
            self._probing = True
        failures = slot.failures + 1
        reason = "rejected"
        if v is Verdict.RETRY:
            when, give_up = policy.next_attempt(
                self._limits(), failures=failures, first_attempt_at=slot.first_attempt_at or at,
                now=time.time(), retry_after=policy.retry_after_seconds(answer.retry_after, time.time()),
                rand=random.random(),
            )
            if give_up is None:
                self._record(row.position, answer, at, "retry")
                slot.failures, slot.next_attempt_at = failures, when
                self._mark()
                return
            reason = give_up
        self._record(row.position, answer, at, "dead")
        self._dead.append(DeadLetter(
            endpoint_id=self.ep.id, position=row.position, reason=reason, attempts=failures,
            last_status=answer.status, last_error=answer.error,
            first_attempt_at=slot.first_attempt_at or at, last_attempt_at=at,
        ))
        self._dead_count += 1
        log.warning(
            "push to %s: position %d dead-lettered (%s after %d attempt(s)): %s",
            redact_url(self.ep.url), row.position, reason, failures, answer.error,
        )
        self._settle(slot)

    def _settle(self, slot: Slot) -> None:
        position = slot.row.position
        del self._slots[position]
        queue = self._sessions[slot.session]
        queue.popleft()  # it was its session's first: only those are ever sent
        if not queue:
            del self._sessions[slot.session]
        self._recompute_cursor()
        self._mark()

    def _jump(self, cursor: int) -> None:
        """`receiver push skip` moved the cursor past us: forget what lies before it."""
        for position in [p for p in self._slots if p <= cursor]:
            slot = self._slots.pop(position)
            queue = self._sessions[slot.session]
            queue.remove(position)
            if not queue:
                del self._sessions[slot.session]
        self._read_to = max(self._read_to, cursor)
        self.cursor = self.durable = cursor
        self._recompute_cursor()
        self.head_at_least(cursor)
        self._wake.set()

    # ------------------------------------------------------------------ reload, redelivery

    async def _reload(self) -> bool:
        self._reload_due = False
        async with self.pool.acquire() as conn:
            fresh = await outbox.load(conn, self.ep.id)
        if fresh is None or fresh.product_id != self.product_id:
            self._stopping = True
            self.on_gone(self.ep.id)
            return False
        self.ep = fresh
        self.blocked = None
        if fresh.cursor > self.cursor:
            self._jump(fresh.cursor)
        return True

    async def _redeliver(self) -> None:
        """Send the dead letters ``receiver push retry`` queued, oldest first."""
        if self._settling:
            # Outcomes of earlier redeliveries are not written yet, so the queue in the
            # database still lists them: read it once the next flush has landed.
            self._redeliveries_due = False
            self._recheck_after_flush = True
            return
        async with self.pool.acquire() as conn:
            queued = await outbox.requested_redeliveries(conn, self.ep.id, self.options.page)
            rows = await outbox.read_positions(conn, self.product_id, [q.position for q in queued])
        if not queued:
            self._redeliveries_due = False
            return
        for item in queued:
            if self._stopping or self._reload_due:
                return
            row = rows.get(item.position)
            if row is None:
                self._park(item, Answer(None, None, "the event is no longer stored (retention)", 0.0),
                           time.time(), 0, "age")
                continue
            await self._redeliver_one(item, row)

    async def _redeliver_one(self, item: outbox.Redelivery, row: StreamRow) -> None:
        limits = self._limits()
        body = orjson.dumps(actions_payload(row))
        failures = 0
        first = time.time()
        while not self._stopping:
            if not self._allowed():
                await self._wait(None, self.options.poll_seconds)
                continue
            answer, at = await self._post(row, body)
            v = policy.verdict(answer.status)
            if v is Verdict.DELIVERED:
                self._record(row.position, answer, at, "delivered")
                self._delivered += 1
                self._last_success_at = at
                self._redelivered.append((self.ep.id, row.position))
                self._settling.add(row.position)
                self._mark()
                return
            failures += 1
            reason = "rejected"
            if v is Verdict.RETRY:
                when, give_up = policy.next_attempt(
                    limits, failures=failures, first_attempt_at=first, now=time.time(),
                    retry_after=policy.retry_after_seconds(answer.retry_after, time.time()),
                    rand=random.random(),
                )
                if give_up is None and when is not None:
                    self._record(row.position, answer, at, "retry")
                    self._mark()
                    # New events wake us too: sleep on until it is time (or we must stop).
                    while not (self._stopping or self._reload_due) and time.time() < when:
                        self._wake.clear()
                        await self._wait(None, when - time.time())
                    continue
                reason = give_up or "attempts"
            self._park(item, answer, at, failures, reason)
            return

    def _park(
        self, item: outbox.Redelivery, answer: Answer, at: float, failures: int, reason: str
    ) -> None:
        self._record(item.position, answer, at, "dead")
        self._dead.append(DeadLetter(
            endpoint_id=self.ep.id, position=item.position, reason=reason,
            attempts=item.attempts + failures, last_status=answer.status,
            last_error=answer.error, first_attempt_at=item.first_attempt_at, last_attempt_at=at,
        ))
        self._settling.add(item.position)
        self._mark()
