"""``GET /stream/{product_id}``: the SSE stream the stock autoplay-sdk clients read.

Modes:

* live (default): frames from now on, data-only, no ``id:`` lines;
* ``?since=<position>`` or a ``Last-Event-ID`` header: every event after that position, then
  live; frames carry ``id: <position>``;
* ``?replay=<seconds>``: the events received in the last N seconds, then live, with ids.

Each connection is one task reading the durable log through its product's feed: from the
shared ring of recent frames when it can, from Postgres in pages when it has fallen behind
(history-then-live, with no handoff gap because the cursor is a position in one ordered
log). Heartbeats (``event: heartbeat``, empty data) go out right after the headers and
whenever the stream has been idle for ``RECEIVER_HEARTBEAT_SECONDS``.

We write the ASGI response by hand rather than use sse-starlette: it spawns four tasks per
connection and pings with comments, while we need one task per subscriber (thousands of
them), frames encoded once and shared, idle-only heartbeats that stay safe after an ``id:``
line, and ids in resumable modes only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import MutableMapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from receiver import apidoc
from receiver.delivery.hub import Feed, Frame
from receiver.delivery.wire import HEARTBEAT, encode_data, frame
from receiver.errors import BadRequestError, NotFoundError, UnauthorizedError, UnavailableError
from receiver.ingest.normalize import is_streamed
from receiver.runtime import Runtime
from receiver.security import bearer_token
from receiver.storage import store

log = logging.getLogger("receiver.stream")
router = APIRouter(tags=["stream"])

Message = MutableMapping[str, Any]


class SSEResponse(Response):
    media_type = "text/event-stream"

    def __init__(
        self,
        rt: Runtime,
        feed: Feed,
        *,
        cursor: int,
        with_ids: bool,
    ) -> None:
        self.rt = rt
        self.feed = feed
        self.cursor = cursor
        self.with_ids = with_ids
        self.status_code = 200
        self.background = None
        headers = {
            "Cache-Control": "no-cache, no-store",
            "X-Accel-Buffering": "no",
            "Connection": "keep-alive",
        }
        if with_ids:
            # Mercure-style: the position this stream resumes after, so a client can tell
            # whether it got what it asked for.
            headers["Last-Event-ID"] = str(cursor)
        self.init_headers(headers)
        self.headers["content-type"] = "text/event-stream; charset=utf-8"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rt = self.rt
        feed = self.feed
        disconnected = asyncio.ensure_future(_wait_disconnect(receive))
        rt.metrics.subscribers(feed.product_id, +1)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": HEARTBEAT, "more_body": True})
            try:
                await self._pump(send, disconnected)
            except UnavailableError as exc:
                # The database went away while this subscriber was catching up: end the stream
                # cleanly; the client reconnects and resumes (by position when it can).
                log.warning("ending stream of %s: %s", feed.product_id, exc.detail)
            with contextlib.suppress(OSError, RuntimeError):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client went away mid-write
        finally:
            rt.metrics.subscribers(feed.product_id, -1)
            disconnected.cancel()
            rt.hub.unsubscribe(feed)

    async def _pump(self, send: Send, disconnected: asyncio.Future[None]) -> None:
        rt = self.rt
        feed = self.feed
        page = rt.settings.stream_page_size
        heartbeat = rt.settings.heartbeat_seconds
        last_write = time.monotonic()
        shutdown = rt.shutdown_future
        loop = asyncio.get_running_loop()
        # Waking up without asyncio.wait(): it adds and then *removes* a callback on every
        # future it waits for, and the feed's and the shutdown futures are shared by every
        # subscriber, so each removal scans all N callbacks — O(N²) per event (65 % of the
        # receiver's CPU at 5,000 subscribers in the fan-out profile). Instead each subscriber
        # owns an Event: disconnect and shutdown set it through callbacks registered once per
        # connection, and the feed's shared future gets at most one callback per subscriber,
        # never removed while pending (it is dropped when the future fires).
        wake = asyncio.Event()
        # The heartbeat timer is armed once per heartbeat interval, not once per wait: a timer
        # per event per subscriber was thousands of allocations per event at 5,000 subscribers
        # (and each survivor brings CPython's next full collection closer). When it fires
        # early because frames went out meanwhile, the loop below re-arms it for the rest.
        timer: asyncio.TimerHandle | None = None

        def poke(_fut: object = None) -> None:
            wake.set()

        def heartbeat_due() -> None:
            nonlocal timer
            timer = None
            wake.set()

        disconnected.add_done_callback(poke)
        shutdown.add_done_callback(poke)
        registered: asyncio.Future[None] | None = None
        try:
            while not disconnected.done() and not shutdown.done():
                if self.cursor < feed.head:
                    frames = feed.frames_after(self.cursor, page)
                    if frames is None:
                        frames = await self._from_database(page)
                    if frames:
                        body = self._encode(frames)
                        self.cursor = frames[-1][0]
                        if body:
                            await send({"type": "http.response.body", "body": body, "more_body": True})
                            last_write = time.monotonic()
                        rt.metrics.lag(feed.product_id, feed.head - self.cursor)
                        continue
                idle_for = heartbeat - (time.monotonic() - last_write)
                if idle_for <= 0:
                    await send({"type": "http.response.body", "body": HEARTBEAT, "more_body": True})
                    last_write = time.monotonic()
                    continue
                changed = feed.changed()
                if self.cursor < feed.head:
                    continue
                if registered is not changed:  # a new future after each head advance
                    changed.add_done_callback(poke)
                    registered = changed
                if timer is None:
                    timer = loop.call_later(idle_for, heartbeat_due)
                wake.clear()
                await wake.wait()
        finally:
            if timer is not None:
                timer.cancel()
            # One O(N) removal per connection, not per event.
            shutdown.remove_done_callback(poke)
            if registered is not None and not registered.done():
                registered.remove_done_callback(poke)

    def _encode(self, frames: list[Frame]) -> bytes:
        if self.with_ids:
            return b"".join(frame(data, pos) for pos, data in frames if data is not None)
        return b"".join(frame(data, None) for _pos, data in frames if data is not None)

    async def _from_database(self, page: int) -> list[Frame]:
        with store.unavailable("replaying the stream"):
            async with self.rt.pool.acquire() as conn:
                # Never past the feed's head: only it is known to be confirmed by a
                # synchronous standby (receiver.storage.replication).
                rows = await store.read_after(
                    conn, self.feed.product_id, self.cursor, page, upto=self.feed.head
                )
        self.rt.metrics.replayed(self.feed.product_id, len(rows))
        return [
            (r.position, encode_data(r) if is_streamed(r.action_type) else None) for r in rows
        ]


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def _parse_position(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        position = int(value.strip())
    except ValueError:
        raise BadRequestError(f"{name} must be a non-negative integer position") from None
    if position < 0:
        raise BadRequestError(f"{name} must be a non-negative integer position")
    return position


@router.get(
    "/stream/{product_id}",
    response_class=Response,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "The event stream."},
        400: apidoc.error("Invalid since, replay or Last-Event-ID."),
        401: apidoc.error("Missing or invalid Bearer stream key."),
        404: apidoc.error("Unknown product."),
        429: apidoc.error("Too many failed attempts; retry after Retry-After seconds."),
        503: apidoc.error("Database unavailable or shutting down."),
    },
)
async def stream(
    product_id: str,
    request: Request,
    since: Annotated[str | None, Query(description="Resume after this position.")] = None,
    replay: Annotated[
        str | None, Query(description="First send the events of the last N seconds.")
    ] = None,
    authorization: Annotated[str | None, Header()] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    rt: Runtime = request.app.state.runtime
    rt.refuse_if_shutting_down()
    product = await rt.find_product(request, product_id)
    if product is None:
        raise NotFoundError(f"unknown product {product_id!r}")
    rt.limits.check_auth_block(request, product_id)
    if not product.stream_ok(bearer_token(authorization)):
        rt.limits.auth_failed(request, product_id)
        raise UnauthorizedError("missing or invalid Bearer stream key")
    return await open_stream(
        rt, product_id, since=since, replay=replay, last_event_id=last_event_id
    )


async def open_stream(
    rt: Runtime,
    product_id: str,
    *,
    since: str | None,
    replay: str | None,
    last_event_id: str | None,
) -> SSEResponse:
    """The SSE response for an already-authenticated subscriber (the SDK's or the admin's)."""
    # Last-Event-ID is what a reconnecting EventSource actually reached, so it wins over the
    # since/replay of the URL it reconnects with.
    resume = _parse_position(last_event_id, "Last-Event-ID")
    if resume is None:
        resume = _parse_position(since, "since")
    replay_seconds: float | None = None
    if resume is None and replay not in (None, ""):
        try:
            replay_seconds = float(replay)  # type: ignore[arg-type]
        except ValueError:
            raise BadRequestError("replay must be a number of seconds") from None
        if not 0 <= replay_seconds <= 10 * 365 * 86400:
            raise BadRequestError("replay must be between 0 and 315360000 seconds")

    feed = await rt.hub.subscribe(product_id)
    try:
        if resume is not None:
            cursor, with_ids = min(resume, feed.head), True
        elif replay_seconds is not None:
            since_at = datetime.now(UTC) - timedelta(seconds=replay_seconds)
            with store.unavailable("finding the replay start"):
                async with rt.pool.acquire() as conn:
                    cursor = await store.position_before(conn, product_id, since_at)
            cursor, with_ids = min(cursor, feed.head), True
        else:
            cursor, with_ids = feed.head, False
    except BaseException:
        rt.hub.unsubscribe(feed)
        raise
    return SSEResponse(rt, feed, cursor=cursor, with_ids=with_ids)

