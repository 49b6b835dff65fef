"""In-memory fan-out: one feed per product that has subscribers in this process.

A feed knows the newest committed position (``head``) and keeps the most recent frames,
encoded once, in a bounded ring that every live subscriber reads from. Subscribers never have
queues of their own: each keeps a cursor and reads the ring — or, when it has fallen behind
the ring, pages from Postgres — at its own pace. A slow subscriber therefore lags, but loses
nothing and costs no memory beyond its socket buffer.

Heads advance in two ways: the local writer hands over the rows it just committed (no round
trip), and a single LISTEN connection per process hears ``receiver_events`` notifications
from every process writing to the same database (ids only, one per commit). If that
connection drops, feeds re-read their heads when it comes back, and a slow poll covers
the gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import Callable, Sequence

import asyncpg
import orjson

from receiver.delivery.wire import StreamRow, encode_data
from receiver.ingest.normalize import is_streamed
from receiver.storage import store

log = logging.getLogger("receiver.hub")

Frame = tuple[int, bytes | None]  # (position, encoded data line, or None when not streamed)


class Feed:
    def __init__(self, product_id: str, ring_size: int) -> None:
        self.product_id = product_id
        self.head = 0
        self.known = False
        self.ring: deque[Frame] = deque(maxlen=ring_size)
        self.subscribers = 0
        self._changed = asyncio.get_running_loop().create_future()
        self._fetching = False
        self._fetch_target = 0

    def changed(self) -> asyncio.Future[None]:
        """A future completed at the next head advance (shared by all subscribers)."""
        return self._changed

    def _wake(self) -> None:
        fut, self._changed = self._changed, asyncio.get_running_loop().create_future()
        if not fut.done():
            fut.set_result(None)

    @property
    def ring_first(self) -> int:
        return self.ring[0][0] if self.ring else self.head + 1

    @property
    def ring_last(self) -> int:
        return self.ring[-1][0] if self.ring else self.head

    def offer(self, rows: Sequence[StreamRow]) -> bool:
        """Append rows that directly follow the ring; False if there is a gap to fetch."""
        if not rows:
            return True
        if rows[0].position != self.ring_last + 1 or not self.known:
            return False
        for row in rows:
            self.ring.append((row.position, encode_data(row) if is_streamed(row.action_type) else None))
        if rows[-1].position > self.head:
            self.head = rows[-1].position
            self._wake()
        return True

    def frames_after(self, cursor: int, limit: int) -> list[Frame] | None:
        """Frames after ``cursor`` from the ring, or None when the ring no longer has them."""
        if cursor >= self.ring_last:
            return []
        first = self.ring_first
        if cursor + 1 < first:
            return None
        start = cursor + 1 - first
        end = min(len(self.ring), start + limit)
        # deque slicing is O(n); index access near either end is cheap.
        return [self.ring[i] for i in range(start, end)]


class Hub:
    def __init__(self, pool: asyncpg.Pool, *, ring_size: int, poll_seconds: float) -> None:
        self.pool = pool
        self.ring_size = ring_size
        self.poll_seconds = poll_seconds
        self.feeds: dict[str, Feed] = {}
        self._listener: asyncpg.Connection | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = asyncio.Event()
        self.on_products_changed: Callable[[str | None], None] = lambda _pid: None
        # Every new head, from any process, local commits included (push deliverers wake on it).
        self.on_heads: Callable[[dict[str, int]], None] = lambda _heads: None
        self.listening = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    async def start(self, dsn: str) -> None:
        self._dsn = dsn
        self._tasks.append(asyncio.create_task(self._listen_forever(), name="hub-listen"))
        self._tasks.append(asyncio.create_task(self._poll_forever(), name="hub-poll"))

    async def close(self) -> None:
        self._closed.set()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._listener.close(), 2)

    async def _listen_forever(self) -> None:
        backoff = 0.1
        while not self._closed.is_set():
            try:
                conn = await asyncpg.connect(self._dsn, timeout=5)
                self._listener = conn
                await conn.add_listener(store.NOTIFY_EVENTS, self._on_events)
                await conn.add_listener(store.NOTIFY_PRODUCTS, self._on_products)
                backoff = 0.1
                self.listening.set()
                # Anything committed while we were not listening was never announced.
                self.on_products_changed(None)
                await self._refresh_all()
                lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                conn.add_termination_listener(functools.partial(_resolve, lost))
                await lost
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure means: reconnect later
                log.warning("LISTEN connection lost: %s", type(exc).__name__)
            finally:
                self.listening.clear()
                if self._listener is not None:
                    with contextlib.suppress(Exception):
                        self._listener.terminate()
                    self._listener = None
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _poll_forever(self) -> None:
        while not self._closed.is_set():
            await asyncio.sleep(self.poll_seconds)
            with contextlib.suppress(Exception):
                await self._refresh_all()

    def _on_events(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            heads = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(heads, dict):
            return
        # Our own writer's commit: published() gets its rows without a query. Fetching here
        # as well raced it (the NOTIFY often lands first) and cost a read per product per
        # commit (10 % of the receiver's CPU with 100 products in the e2e profile). Should the
        # writer miss a commit (its connection lost after COMMIT), the next commit's gap or
        # the poll fills it in.
        origin = heads.pop(store.ORIGIN_KEY, None)
        self.on_heads(heads)
        if origin == store.origin_of(self.pool):
            return
        for product_id, position in heads.items():
            feed = self.feeds.get(product_id)
            if feed is not None and isinstance(position, int) and position > feed.head:
                self._schedule_fetch(feed, position)

    def _on_products(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        # The product's events may have changed under us (``receiver erase``): forget the
        # cached frames, so resuming subscribers read them from the database again.
        feed = self.feeds.get(payload) if payload else None
        if feed is not None:
            feed.ring.clear()
        self.on_products_changed(payload or None)

    async def _refresh_all(self) -> None:
        for feed in list(self.feeds.values()):
            async with self.pool.acquire() as conn:
                current = await store.head(conn, feed.product_id)
            if current is not None and current > feed.head:
                self._schedule_fetch(feed, current)

    # ------------------------------------------------------------------ feeds

    async def subscribe(self, product_id: str) -> Feed:
        feed = self.feeds.get(product_id)
        if feed is None:
            feed = Feed(product_id, self.ring_size)
            self.feeds[product_id] = feed
        feed.subscribers += 1
        if not feed.known:
            try:
                with store.unavailable("reading the stream head"):
                    async with self.pool.acquire() as conn:
                        current = await store.head(conn, product_id)
            except BaseException:
                self.unsubscribe(feed)
                raise
            if not feed.known:
                feed.head = current or 0
                feed.known = True
        return feed

    def unsubscribe(self, feed: Feed) -> None:
        feed.subscribers -= 1
        if feed.subscribers <= 0 and self.feeds.get(feed.product_id) is feed:
            del self.feeds[feed.product_id]

    def published(self, rows_by_product: dict[str, list[StreamRow]]) -> None:
        """Rows the local writer just committed, in position order per product."""
        self.on_heads({pid: rows[-1].position for pid, rows in rows_by_product.items() if rows})
        for product_id, rows in rows_by_product.items():
            feed = self.feeds.get(product_id)
            if feed is None or not rows:
                continue
            if not feed.offer(rows):
                self._schedule_fetch(feed, rows[-1].position)

    def _schedule_fetch(self, feed: Feed, target: int) -> None:
        feed._fetch_target = max(feed._fetch_target, target)
        if feed._fetching:
            return
        feed._fetching = True
        asyncio.get_running_loop().create_task(self._fetch(feed))

    async def _fetch(self, feed: Feed) -> None:
        """Fill the ring up to the announced head, in order, from the database."""
        try:
            while feed.known and feed.ring_last < feed._fetch_target:
                after = feed.ring_last
                async with self.pool.acquire() as conn:
                    rows = await store.read_range(conn, feed.product_id, after, feed._fetch_target)
                # The local writer may have appended some of these meanwhile.
                rows = [r for r in rows if r.position > feed.ring_last]
                if not rows or not feed.offer(rows):
                    return
        except Exception as exc:  # noqa: BLE001 - the poll retries; subscribers fall back to the DB
            log.warning("feed fetch failed for %s: %s", feed.product_id, type(exc).__name__)
        finally:
            feed._fetching = False


def _resolve(future: asyncio.Future[None], *_args: object) -> None:
    if not future.done():
        future.set_result(None)
