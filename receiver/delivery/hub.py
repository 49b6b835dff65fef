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
the gap. The LISTEN connection is a :class:`receiver.storage.primary.PrimaryLink`: after a
failover it reconnects to the new primary.

A feed's head only ever advances to positions a synchronous standby has confirmed (see
receiver.storage.replication): the local writer's rows come from commits that waited for the
standby, and everything read from the database (a new feed's head, rows announced by other
processes) is confirmed before it is offered. Since subscribers never read past their feed's
head, no stream serves an event that a failover could take back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence

import asyncpg
import orjson

from receiver.delivery.wire import StreamRow, encode_data
from receiver.errors import UnavailableError
from receiver.ingest.normalize import is_streamed
from receiver.storage import store
from receiver.storage.primary import PrimaryLink
from receiver.storage.replication import Confirmer

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
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        ring_size: int,
        poll_seconds: float,
        confirmer: Confirmer | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.pool = pool
        self.ring_size = ring_size
        self.poll_seconds = poll_seconds
        self.timeout = timeout
        self.confirmer = confirmer or Confirmer(pool, timeout)
        self.feeds: dict[str, Feed] = {}
        self.link: PrimaryLink | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = asyncio.Event()
        self.on_products_changed: Callable[[str | None], None] = lambda _pid: None
        # Every new head, from any process, local commits included (push deliverers wake on it).
        self.on_heads: Callable[[dict[str, int]], None] = lambda _heads: None
        self.listening = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    async def start(self, dsn: str) -> None:
        self.link = PrimaryLink(
            dsn, name="LISTEN", on_connect=self._on_listen, on_lost=self.listening.clear,
            check_seconds=self.poll_seconds, timeout=self.timeout,
        )
        self._tasks.append(asyncio.create_task(self.link.run(), name="hub-listen"))
        self._tasks.append(asyncio.create_task(self._poll_forever(), name="hub-poll"))

    async def close(self) -> None:
        self._closed.set()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.link is not None:
            await self.link.close()

    async def _on_listen(self, conn: asyncpg.Connection) -> None:
        await conn.add_listener(store.NOTIFY_EVENTS, self._on_events)
        await conn.add_listener(store.NOTIFY_PRODUCTS, self._on_products)
        self.listening.set()
        # Anything committed while we were not listening was never announced.
        self.on_products_changed(None)
        with contextlib.suppress(Exception):  # the poll retries
            await self._refresh_all()

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
                        current, seen = await store.head_seen(conn, product_id)
                if seen is not None:
                    # A subscriber's cursor starts here: it must be a position no failover
                    # can take back (else it would skip the event that gets it next).
                    await self.confirmer.confirm(seen)
            except BaseException:
                self.unsubscribe(feed)
                raise
            if not feed.known:
                feed.head = current or 0
                feed.known = True
        return feed

    async def confirmed_head(self, product_id: str) -> int | None:
        """The newest position of ``product_id`` that a synchronous standby has confirmed.

        For any read that serves events outside the stream (live activity, replay, pull):
        clip it with ``position <= confirmed_head`` and it serves nothing a failover could
        take back. None for an unknown product. Raises UnavailableError like any read.
        """
        feed = self.feeds.get(product_id)
        if feed is not None and feed.known:
            return feed.head
        with store.unavailable("reading the stream head"):
            async with self.pool.acquire() as conn:
                current, seen = await store.head_seen(conn, product_id)
        if seen is not None:
            await self.confirmer.confirm(seen)
        return current

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

    def _retry_fetch(self, product_id: str, target: int) -> None:
        feed = self.feeds.get(product_id)
        if feed is not None and not self._closed.is_set() and feed.ring_last < target:
            self._schedule_fetch(feed, target)

    async def _fetch(self, feed: Feed) -> None:
        """Fill the ring up to the announced head, in order, from the database."""
        try:
            while feed.known and feed.ring_last < feed._fetch_target:
                after = feed.ring_last
                with store.unavailable("reading announced events"):
                    async with self.pool.acquire() as conn:
                        rows, seen = await store.read_range_seen(
                            conn, feed.product_id, after, feed._fetch_target
                        )
                if seen is not None:
                    # Announced by another process; its commit may have stopped waiting for
                    # the standby (cancelled, or its primary died). Serve it once confirmed.
                    await self.confirmer.confirm(seen)
                # The local writer may have appended some of these meanwhile.
                rows = [r for r in rows if r.position > feed.ring_last]
                if not rows or not feed.offer(rows):
                    return
        except UnavailableError as exc:
            log.warning("feed fetch for %s not served: %s", feed.product_id, exc.detail)
            if not self._closed.is_set():
                # Typically a failover or the standby's loss: try again soon rather than at
                # the next poll (the retry is bounded by the database timeout as well).
                asyncio.get_running_loop().call_later(
                    1.0, self._retry_fetch, feed.product_id, feed._fetch_target
                )
        except Exception as exc:  # noqa: BLE001 - the poll retries; subscribers fall back to the DB
            log.warning("feed fetch failed for %s: %s", feed.product_id, type(exc).__name__)
        finally:
            feed._fetching = False

