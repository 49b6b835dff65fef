"""The deliverer of one push endpoint: its payloads, one at a time, in position order.

A deliverer runs only in the process holding its endpoint's advisory lock (see ``service``).
It reads the product's events after its cursor in pages from its own pool, POSTs each actions
payload (the SSE frame's JSON object, serialized once and signed over those exact bytes), and
moves on only when the payload is answered 2xx or given up on (dead letter). Internal events
(``$identify`` and such), which the stream never shows, are passed over without a request.

Its progress (cursor, retry state, attempts, dead letters) is written by the service's
flusher, batched with every other endpoint's, on the lock's own connection. Acknowledged
payloads therefore become durable a moment after their 2xx: a crash re-sends those of the
last moment and the one in flight, each with its ``webhook-id``, and loses nothing, because
the cursor only moves in that same write. A deliverer stays at most ``max_ahead`` payloads
ahead of its durable cursor.

While a payload is retried, the ones behind it wait: that is what keeps them in order.
``receiver push retry`` queues dead letters again; they are sent before anything newer.
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
from receiver.ingest.normalize import is_streamed
from receiver.ops.metrics import Metrics

log = logging.getLogger("receiver.push")

VISIBILITY_RETRY_SECONDS = 0.005


@dataclass(frozen=True, slots=True)
class Options:
    limits: policy.Limits  # the installation defaults; an endpoint may override two of them
    send_bearer: bool
    allowed_hosts: tuple[str, ...]
    poll_seconds: float
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
    ) -> None:
        self.ep = endpoint
        self.pool = pool
        self.sender = sender
        self.options = options
        self.metrics = metrics
        self.on_dirty = on_dirty
        self.on_gone = on_gone
        self.cursor = endpoint.cursor  # delivered (or given up on) through here
        self.durable = endpoint.cursor  # ... and written to the database through here
        self.head = endpoint.cursor
        self.failures = endpoint.attempts
        self.first_attempt_at = endpoint.first_attempt_at
        self.next_attempt_at = endpoint.next_attempt_at
        self.seq = endpoint.attempts_logged
        self.blocked: str | None = None
        self._buffer: deque[StreamRow] = deque()
        self._cached: tuple[int, bytes] | None = None
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
        """Finish the request in flight (within ``grace`` seconds), then stop."""
        self._stopping = True
        self._wake.set()
        if self.task is None:
            return
        with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
            await asyncio.wait_for(asyncio.shield(self.task), grace)
        if not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task

    # ------------------------------------------------------------------ flushing

    def take(self) -> Taken | None:
        if not self._dirty:
            return None
        last_status, last_error, last_at = self._last or (None, None, None)
        taken = Taken(
            update=EndpointUpdate(
                endpoint_id=self.ep.id, cursor=self.cursor, attempts=self.failures,
                first_attempt_at=self.first_attempt_at if self.failures else None,
                next_attempt_at=self.next_attempt_at if self.failures else None,
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
                    await self._redeliver()
                    continue
                if self.cursor - self.durable >= self.options.max_ahead:
                    self._flushed.clear()
                    await self._wait(self._flushed.wait(), self.options.poll_seconds)
                    continue
                row = await self._next_row()
                if row is None:
                    soon, self._soon = self._soon, False
                    await self._wait(None, VISIBILITY_RETRY_SECONDS if soon else self.options.poll_seconds)
                    self._read_due = True
                    continue
                if not is_streamed(row.action_type):
                    self._buffer.popleft()
                    self._advance(row.position)
                    continue
                now = time.time()
                if self.next_attempt_at is not None and self.failures and self.next_attempt_at > now:
                    await self._wait(None, self.next_attempt_at - now)
                    continue
                if not self._allowed():
                    await self._wait(None, self.options.poll_seconds)
                    continue
                await self._deliver(row)
        except asyncio.CancelledError:
            raise
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # The database went away: the service notices the task ended and claims the
            # endpoint again (from the durable cursor) once it is back.
            log.warning("push deliverer for %s stopped: %s", self.product_id, type(exc).__name__)
        except Exception:
            log.exception("push deliverer for %s stopped", self.product_id)

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

    async def _next_row(self) -> StreamRow | None:
        if self._buffer:
            return self._buffer[0]
        if not (self._read_due or self.head > self.cursor):
            return None
        self._read_due = False
        async with self.pool.acquire() as conn:
            rows = await outbox.read_events(conn, self.product_id, self.cursor, self.options.page)
        if rows:
            self._buffer.extend(rows)
            self.head_at_least(rows[-1].position)
            return self._buffer[0]
        if self.head > self.cursor:
            # A notification said there is more, but we see nothing: either it is not visible
            # to us yet (a listener can hear of a commit a moment before other sessions see
            # it), or retention / `receiver erase` removed those events before they were
            # delivered. Only the committed head read in the same snapshot as the events tells
            # the two apart: pass over positions only when they are truly gone.
            async with self.pool.acquire() as conn:
                head, more = await outbox.head_and_more(conn, self.product_id, self.cursor)
            if head is not None and head > self.cursor and not more:
                self._advance(head)
            else:
                self._soon = True
        return None

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

    def _body(self, row: StreamRow) -> bytes:
        if self._cached is None or self._cached[0] != row.position:
            self._cached = (row.position, orjson.dumps(actions_payload(row)))
        return self._cached[1]

    async def _post(self, row: StreamRow) -> tuple[Answer, float]:
        now = time.time()
        body = self._body(row)
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

    async def _deliver(self, row: StreamRow) -> None:
        failures_before = self.failures
        answer, at = await self._post(row)
        if row.position <= self.cursor:
            # `receiver push skip` moved the cursor past it while the request was out (the
            # flusher learnt it and jumped): its outcome no longer matters.
            self._record(row.position, answer, at, "delivered" if answer.status and
                         200 <= answer.status < 300 else "retry")
            self._mark()
            return
        if failures_before == 0:
            self.first_attempt_at = at
        v = policy.verdict(answer.status)
        if v is Verdict.DELIVERED:
            self._record(row.position, answer, at, "delivered")
            self._delivered += 1
            self._last_success_at = at
            self.metrics.push_delivered(self.product_id, time.time() - row.received_at)
            self._pop(row)
            self._advance(row.position)
            return
        failures = self.failures + 1
        reason = "rejected"
        if v is Verdict.RETRY:
            when, give_up = policy.next_attempt(
                self._limits(), failures=failures, first_attempt_at=self.first_attempt_at or at,
                now=time.time(), retry_after=policy.retry_after_seconds(answer.retry_after, time.time()),
                rand=random.random(),
            )
            if give_up is None:
                self._record(row.position, answer, at, "retry")
                self.failures, self.next_attempt_at = failures, when
                self._mark()
                return
            reason = give_up
        self._record(row.position, answer, at, "dead")
        self._dead.append(DeadLetter(
            endpoint_id=self.ep.id, position=row.position, reason=reason, attempts=failures,
            last_status=answer.status, last_error=answer.error,
            first_attempt_at=self.first_attempt_at or at, last_attempt_at=at,
        ))
        self._dead_count += 1
        log.warning(
            "push to %s: position %d dead-lettered (%s after %d attempt(s)): %s",
            redact_url(self.ep.url), row.position, reason, failures, answer.error,
        )
        self._pop(row)
        self._advance(row.position)

    def _pop(self, row: StreamRow) -> None:
        if self._buffer and self._buffer[0] is row:
            self._buffer.popleft()

    def _advance(self, position: int) -> None:
        self.cursor = max(self.cursor, position)
        self.failures = 0
        self.first_attempt_at = self.next_attempt_at = None
        self.metrics.push_lag(self.product_id, max(self.head - self.cursor, 0))
        self._mark()

    def _jump(self, cursor: int) -> None:
        """`receiver push skip` moved the cursor past us: forget what lies before it."""
        while self._buffer and self._buffer[0].position <= cursor:
            self._buffer.popleft()
        self.cursor = self.durable = cursor
        self.failures = 0
        self.first_attempt_at = self.next_attempt_at = None
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
        failures = 0
        first = time.time()
        while not self._stopping:
            if not self._allowed():
                await self._wait(None, self.options.poll_seconds)
                continue
            answer, at = await self._post(row)
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
