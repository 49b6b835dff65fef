"""Constant-rate load that retries as PostHog does, the subscribers that read it, and the
figures the HA tests print and assert.

* :class:`PostHogLoad` sends event ``i`` at ``t0 + i / rate`` (a new event is never held back
  by a slow answer) and retries every attempt answered 5xx, 408 or 429, or lost in transit,
  with backoff (Retry-After honoured, at most 2 s), until a 200. Every attempt is recorded.
* :class:`StockSubscriber` is the stock ``autoplay_sdk.AsyncConnectorClient`` (live tail, no
  resume: what our users run); :class:`tests.faults.kit.ResumingSubscriber` resumes by
  ``Last-Event-ID`` or ``?since=``.
* :func:`figures` compares all of it with the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from autoplay_sdk import ActionsPayload, AsyncConnectorClient

from tests.faults.kit import ResumingSubscriber, asql, event_uuid, hog_event

RETRIED = {408, 429}  # and every 5xx; PostHog drops every other 4xx


@dataclass
class Attempt:
    started: float
    ended: float
    status: int | None  # None: no HTTP answer (connection refused or reset)
    retry_after: str | None = None
    error: str | None = None


@dataclass
class Sent:
    i: int
    attempts: list[Attempt] = field(default_factory=list)
    acked_at: float | None = None
    position: int | None = None


class PostHogLoad:
    """Events due at a constant rate, sent by ``workers`` senders, each with its own client and
    one keep-alive connection (like PostHog's workers; one shared pool with thousands of queued
    requests costs the test process quadratic CPU). Retries wait their backoff off the
    senders, so a failover's backlog is drained as fast as the receiver answers."""

    def __init__(
        self, url: Callable[[], str], secret: str, run: str, rate: float, workers: int = 32
    ) -> None:
        self.url = url
        self.headers = {"x-posthog-secret": secret, "content-type": "application/json"}
        self.run_id = run
        self.rate = rate
        self.workers = workers
        self.events: dict[int, Sent] = {}
        self._ready: asyncio.Queue[int] = asyncio.Queue()
        self._backoff: dict[int, float] = {}
        self._closed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, stop: asyncio.Event) -> None:
        """New events until ``stop``; retries and senders until :meth:`close`."""
        self._tasks.append(asyncio.create_task(self._produce(stop)))
        self._tasks += [asyncio.create_task(self._send()) for _ in range(self.workers)]

    async def _produce(self, stop: asyncio.Event) -> None:
        t0 = time.monotonic()
        i = 0
        while not stop.is_set():
            delay = t0 + i / self.rate - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    return
            self.events[i] = Sent(i)
            self._ready.put_nowait(i)
            i += 1

    async def _send(self) -> None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(15.0)) as client:
            while not self._closed.is_set():
                try:
                    i = await asyncio.wait_for(self._ready.get(), 0.2)
                except TimeoutError:
                    continue
                await self._attempt(client, self.events[i])

    async def _attempt(self, client: httpx.AsyncClient, sent: Sent) -> None:
        body = orjson.dumps(hog_event(self.run_id, sent.i))
        started = time.monotonic()
        try:
            r = await client.post(self.url(), content=body, headers=self.headers)
        except httpx.HTTPError as exc:
            sent.attempts.append(Attempt(started, time.monotonic(), None, error=type(exc).__name__))
        else:
            a = Attempt(started, time.monotonic(), r.status_code, r.headers.get("retry-after"))
            sent.attempts.append(a)
            if r.status_code == 200:
                sent.acked_at = a.ended
                sent.position = r.json().get("position")
                return
            if r.status_code < 500 and r.status_code not in RETRIED:
                return  # PostHog would drop it: the test reports it as a bad answer
        backoff = self._backoff.get(sent.i, 0.25)
        wait = backoff
        if sent.attempts[-1].retry_after:
            with contextlib.suppress(ValueError):
                wait = max(wait, float(sent.attempts[-1].retry_after))
        self._backoff[sent.i] = min(backoff * 2, 2.0)
        asyncio.get_running_loop().call_later(min(wait, 2.0), self._ready.put_nowait, sent.i)

    def settled(self) -> bool:
        """Every event has its final answer (a 200, or a status PostHog would not retry)."""
        return all(
            s.acked_at is not None
            or (s.attempts and s.attempts[-1].status is not None and s.attempts[-1].status < 500
                and s.attempts[-1].status not in RETRIED)
            for s in self.events.values()
        )

    async def close(self) -> None:
        self._closed.set()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    # ------------------------------------------------------------------ figures

    def acked(self) -> int:
        return sum(1 for s in self.events.values() if s.acked_at is not None)

    def acked_before(self, t: float) -> int:
        return sum(1 for s in self.events.values() if s.acked_at is not None and s.acked_at < t)

    def acked_after_start(self, t: float) -> int:
        """200s to attempts that started after ``t``."""
        return sum(
            1 for s in self.events.values() for a in s.attempts if a.status == 200 and a.started > t
        )

    def first_200_after(self, t: float) -> float | None:
        ends = [
            a.ended for s in self.events.values() for a in s.attempts if a.status == 200 and a.started > t
        ]
        return min(ends) - t if ends else None

    def attempts(self) -> list[Attempt]:
        return [a for s in self.events.values() for a in s.attempts]

    def statuses(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for a in self.attempts():
            key = str(a.status) if a.status is not None else (a.error or "no answer")
            out[key] = out.get(key, 0) + 1
        return out


class StockSubscriber:
    """The stock SDK client: live frames only, reconnects by itself (about once a second)."""

    def __init__(self, url: str, token: str) -> None:
        self.user_ids: list[str] = []
        self.connects = 0
        self.connected = asyncio.Event()

        async def on_actions(payload: ActionsPayload) -> None:
            self.user_ids.append(str(payload.user_id))

        def on_connect() -> None:
            self.connects += 1
            self.connected.set()

        self.client = AsyncConnectorClient(url=url, token=token, on_connect=on_connect)
        self.client.on_actions(on_actions)
        self.task: Any = None

    def start(self) -> None:
        self.task = self.client.run_in_background()

    async def stop(self) -> None:
        self.client.stop()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task


@dataclass
class Figures:
    sent: int
    acked: int
    lost: int  # acknowledged, not in the table
    stored: int
    duplicated: int  # events stored more than once
    gap_free: bool  # the table's positions are 1..head
    head: int
    phantoms: int  # a frame at position N that is not the table's event N
    subscriber_gaps: dict[str, int]  # positions a resuming subscriber never got
    subscriber_dups: dict[str, int]
    stock_missing: dict[str, int]  # events a stock subscriber never got (after it connected)
    stock_dups: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


async def figures(
    url: str,
    load: PostHogLoad,
    resuming: dict[str, ResumingSubscriber],
    stock: dict[str, StockSubscriber],
    stock_from: dict[str, int] | None = None,
) -> Figures:
    """``stock_from``: the first event index each stock subscriber must see (live tail)."""
    run = load.run_id
    rows = await asql(
        url, "SELECT position, event_uuid::text AS u, distinct_id FROM events WHERE product_id = $1", run
    )
    by_position = {r["position"]: r["distinct_id"] for r in rows}
    uuids = [r["u"] for r in rows]
    head = max(by_position, default=0)
    acked = {s.i for s in load.events.values() if s.acked_at is not None}
    lost = len({event_uuid(run, i) for i in acked} - set(uuids))
    phantoms = sum(
        1 for sub in resuming.values() for p, f in sub.frames.items() if by_position.get(p) != f["user_id"]
    )
    gaps, dups = {}, {}
    for name, sub in resuming.items():
        seen = set(sub.positions)
        gaps[name] = sum(1 for p in range(1, head + 1) if p not in seen)  # all read from 0
        dups[name] = len(sub.positions) - len(seen)
    stock_missing, stock_dups = {}, {}
    expected_users = {f"{run}-{i}" for i in load.events}
    for name, sub in stock.items():
        start = (stock_from or {}).get(name, 0)
        want = {f"{run}-{i}" for i in load.events if i >= start}
        got = set(sub.user_ids)
        stock_missing[name] = len(want - got)
        stock_dups[name] = len(sub.user_ids) - len(got)
        phantoms += len(got - expected_users)
    return Figures(
        sent=len(load.events), acked=len(acked), lost=lost, stored=len(uuids),
        duplicated=len(uuids) - len(set(uuids)), gap_free=sorted(by_position) == list(range(1, head + 1)),
        head=head, phantoms=phantoms, subscriber_gaps=gaps, subscriber_dups=dups,
        stock_missing=stock_missing, stock_dups=stock_dups,
    )
