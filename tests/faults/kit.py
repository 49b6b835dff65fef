"""Helpers for the fault, security and bad-input tests: Hog payloads, concurrent load, a tiny
resuming SSE reader, direct SQL on the receiver's database, and printing measured figures.

Import as ``from tests.faults.kit import ...`` (the repository root is on ``sys.path`` under
``python -m pytest``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
import httpx
import orjson
import pytest

from receiver.storage.store import asyncpg_dsn

T = TypeVar("T")


# --------------------------------------------------------------------------- reporting


def show(capsys: pytest.CaptureFixture[str], label: str, **figures: object) -> None:
    """Print the figures a test measured so they appear in the pytest output (no ``-s`` needed)."""
    text = "  ".join(f"{k}={v}" for k, v in figures.items())
    with capsys.disabled():
        print(f"\n[{label}] {text}", flush=True)


# --------------------------------------------------------------------------- in-process receivers


def nodelay(live: Any) -> Any:
    """Set TCP_NODELAY on an in-process receiver's listening socket (accepted ones inherit it).

    ``tests/conftest.py`` binds with ``socket.socket(AF_INET, SOCK_STREAM)`` (proto 0), and
    asyncio only sets TCP_NODELAY on accepted sockets whose proto is IPPROTO_TCP; without it
    every response written as headers + body waits ~40 ms for the client's delayed ACK. The
    real ``receiver serve`` is not affected (uvicorn creates its own sockets).
    """
    for server in getattr(live.server, "servers", []):
        for sock in server.sockets:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return live


# --------------------------------------------------------------------------- polling


def wait_for(
    probe: Callable[[], T | None], *, timeout: float = 15.0, interval: float = 0.05, what: str = "condition"
) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last={last!r})")
        time.sleep(interval)


async def await_for(
    probe: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = 15.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = await probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last={last!r})")
        await asyncio.sleep(interval)


# --------------------------------------------------------------------------- payloads


def hog_event(run: str, i: int, **extra: Any) -> dict[str, Any]:
    """A Hog-destination payload (the tutorial's flat shape plus ``uuid``) unique per (run, i).

    ``distinct_id`` carries the index so a stream frame (which has no uuid) can be traced back.
    """
    body: dict[str, Any] = {
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{run}/{i}")),
        "event": "$pageview",
        "distinct_id": f"{run}-{i}",
        "session_id": f"{run}-s{i % 16}",
        "email": None,
        "current_url": f"https://app.example.com/projects/{i}/settings",
        "referrer": "$direct",
        "timestamp": datetime.now(UTC).isoformat(),
        "elements_chain": "",
    }
    body.update(extra)
    return body


def event_uuid(run: str, i: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{run}/{i}"))


# --------------------------------------------------------------------------- database


async def _sql(database_url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(asyncpg_dsn(database_url), timeout=10)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def sql(database_url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    """Run one query on the receiver's database from synchronous test code."""
    return asyncio.run(_sql(database_url, query, *args))


async def asql(database_url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    return await _sql(database_url, query, *args)


def count_events(database_url: str, product_id: str | None = None) -> int:
    if product_id is None:
        return int(sql(database_url, "SELECT count(*) FROM events")[0][0])
    return int(sql(database_url, "SELECT count(*) FROM events WHERE product_id = $1", product_id)[0][0])


@dataclass
class Stored:
    """What the table holds for a set of expected uuids."""

    rows: int
    distinct: int
    duplicated: int  # uuids stored more than once
    positions_gap_free: bool
    uuids: set[str]


async def stored_uuids(database_url: str, product_id: str) -> Stored:
    rows = await asql(
        database_url,
        "SELECT event_uuid::text AS u, count(*) AS n FROM events WHERE product_id = $1 GROUP BY 1",
        product_id,
    )
    pos = await asql(
        database_url,
        "SELECT count(*) AS n, coalesce(max(position), 0) AS hi, coalesce(min(position), 1) AS lo, "
        "(SELECT last_position FROM products WHERE product_id = $1) AS head "
        "FROM events WHERE product_id = $1",
        product_id,
    )
    n, hi, lo, head = pos[0]["n"], pos[0]["hi"], pos[0]["lo"], pos[0]["head"]
    return Stored(
        rows=int(n),
        distinct=len(rows),
        duplicated=sum(1 for r in rows if r["n"] > 1),
        positions_gap_free=(n == hi and lo == 1 and head == hi) if n else head == 0,
        uuids={r["u"] for r in rows},
    )


# --------------------------------------------------------------------------- load


@dataclass
class LoadResult:
    sent: int = 0
    acked: dict[int, int | None] = field(default_factory=dict)  # index -> position (None = duplicate)
    statuses: dict[int, int] = field(default_factory=dict)  # status -> count (non-200 included)
    errors: dict[str, int] = field(default_factory=dict)  # exception type -> count
    bad: list[tuple[int, int, str]] = field(default_factory=list)  # unexpected answers

    def count_status(self, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def count_error(self, exc: BaseException) -> None:
        name = type(exc).__name__
        self.errors[name] = self.errors.get(name, 0) + 1


async def post_load(
    url: str,
    secret: str,
    bodies: Iterable[tuple[int, dict[str, Any]]],
    *,
    concurrency: int,
    result: LoadResult | None = None,
    on_ack: Callable[[LoadResult], None] | None = None,
    stop: asyncio.Event | None = None,
    timeout: float = 10.0,
) -> LoadResult:
    """POST bodies with ``concurrency`` workers; record acknowledgements, statuses and errors.

    Each worker has its own httpx client holding one keep-alive connection (a PostHog plugin
    server worker looks like that; one shared 32-connection pool costs ~3x the client CPU).
    A worker stops taking new bodies once ``stop`` is set; bodies in flight still finish.
    """
    result = result or LoadResult()
    queue = list(bodies)
    queue.reverse()
    headers = {"x-posthog-secret": secret, "content-type": "application/json"}

    async def worker() -> None:
        async with httpx.AsyncClient(timeout=timeout) as client:
            while queue and not (stop is not None and stop.is_set()):
                i, body = queue.pop()
                result.sent += 1
                try:
                    r = await client.post(url, content=orjson.dumps(body), headers=headers)
                except httpx.HTTPError as exc:
                    result.count_error(exc)
                    continue
                result.count_status(r.status_code)
                if r.status_code == 200:
                    result.acked[i] = r.json().get("position")
                    if on_ack is not None:
                        on_ack(result)
                elif r.status_code not in (429, 503):
                    result.bad.append((i, r.status_code, r.text[:200]))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return result


# --------------------------------------------------------------------------- SSE


@dataclass
class SSEEvent:
    id: str | None
    event: str
    data: str


class SSEParser:
    """Incremental text/event-stream parser (the subset the receiver emits, per the spec)."""

    def __init__(self) -> None:
        self._buf = b""
        self._id: str | None = None
        self._event = ""
        self._data: list[str] = []
        self._has_fields = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        self._buf += chunk
        out: list[SSEEvent] = []
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                return out
            line = self._buf[:nl].rstrip(b"\r").decode("utf-8")
            self._buf = self._buf[nl + 1 :]
            if line == "":
                if self._has_fields:
                    out.append(SSEEvent(self._id, self._event or "message", "\n".join(self._data)))
                self._event, self._data, self._has_fields = "", [], False
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            self._has_fields = True
            if name == "data":
                self._data.append(value)
            elif name == "event":
                self._event = value
            elif name == "id":
                self._id = value


@dataclass
class ResumingSubscriber:
    """A stream client that keeps the last ``id:`` it saw and resumes from it after any failure.

    ``mode="header"`` resumes with ``Last-Event-ID``; ``mode="since"`` with ``?since=``.
    Frames are recorded by position, so duplicates and gaps are visible to the test.
    """

    url: str
    stream_key: str
    mode: str = "header"
    last_id: int = 0
    positions: list[int] = field(default_factory=list)
    frames: dict[int, dict[str, Any]] = field(default_factory=dict)
    connects: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    clean_ends: int = 0

    async def run(self, stop: asyncio.Event, *, max_backoff: float = 0.5) -> None:
        backoff = 0.05
        while not stop.is_set():
            headers = {"Authorization": f"Bearer {self.stream_key}", "Accept": "text/event-stream"}
            params = {}
            if self.mode == "header":
                headers["Last-Event-ID"] = str(self.last_id)
            else:
                params["since"] = str(self.last_id)
            try:
                async with (
                    httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=30.0)) as client,
                    client.stream("GET", self.url, headers=headers, params=params) as r,
                ):
                    if r.status_code != 200:
                        key = f"status {r.status_code}"
                        self.failures[key] = self.failures.get(key, 0) + 1
                        await r.aread()
                        raise httpx.TransportError(f"status {r.status_code}")
                    self.connects += 1
                    backoff = 0.05
                    parser = SSEParser()
                    async for chunk in r.aiter_raw():
                        for ev in parser.feed(chunk):
                            self._on_event(ev)
                        if stop.is_set():
                            break
                    else:
                        self.clean_ends += 1
            except (httpx.HTTPError, OSError) as exc:
                name = type(exc).__name__
                self.failures[name] = self.failures.get(name, 0) + 1
            if stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, max_backoff)

    def _on_event(self, ev: SSEEvent) -> None:
        if ev.event == "heartbeat" or not ev.data:
            return
        payload = orjson.loads(ev.data)
        position = int(payload["position"])
        if ev.id is not None:
            assert int(ev.id) == position, (ev.id, position)
            self.last_id = position
        self.positions.append(position)
        self.frames[position] = payload


def gaps_and_dups(positions: list[int], head: int) -> tuple[list[int], int]:
    """Positions in 1..head never received, and how many were received more than once."""
    seen = set(positions)
    missing = [p for p in range(1, head + 1) if p not in seen]
    return missing, len(positions) - len(seen)


async def collect_stream(
    url: str, stream_key: str, *, until: int, since: int = 0, timeout: float = 30.0, mode: str = "since"
) -> ResumingSubscriber:
    """Read the stream from ``since`` until position ``until`` has arrived (or fail at ``timeout``)."""
    sub = ResumingSubscriber(url, stream_key, mode=mode, last_id=since)
    stop = asyncio.Event()
    task = asyncio.create_task(sub.run(stop))
    try:
        await await_for(
            lambda: _done(sub, until), timeout=timeout, what=f"stream to reach position {until}"
        )
    finally:
        stop.set()
        await cancel(task)
    return sub


async def cancel(task: asyncio.Task[Any]) -> None:
    """Stop a subscriber task now (it may be waiting for the next heartbeat)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _done(sub: ResumingSubscriber, until: int) -> bool:
    return sub.last_id >= until


def new_product_id(prefix: str = "f") -> str:
    return prefix + uuid.uuid4().hex[:8]
