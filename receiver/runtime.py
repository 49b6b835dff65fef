"""Everything a running receiver holds, created by the app's lifespan and torn down after it.

Handlers reach it as ``request.app.state.runtime``; nothing here is a module global, so one
process (a test) can run several receivers with different settings.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import Any

import asyncpg

from receiver.delivery.hub import Hub
from receiver.errors import UnavailableError
from receiver.ingest import privacy
from receiver.ingest.limits import Limits
from receiver.ops.metrics import MULTIPROCESS, Metrics
from receiver.settings import Settings
from receiver.storage import products, retention, store
from receiver.storage.products import Directory, ProductAuth
from receiver.storage.replication import Confirmer
from receiver.storage.store import Pending
from receiver.storage.writer import Writer

log = logging.getLogger("receiver")


@dataclass(eq=False)
class Runtime:
    settings: Settings
    pool: asyncpg.Pool
    hub: Hub
    writer: Writer
    directory: Directory
    limits: Limits
    metrics: Metrics
    migration_head: str | None
    shutdown_future: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    maintenance: asyncio.Task[None] | None = None  # receiver.storage.retention background task

    @property
    def shutting_down(self) -> bool:
        return self.shutdown_future.done()

    def begin_shutdown(self) -> None:
        """Refuse new work (503) and end streams; in-flight commits still complete."""
        if not self.shutdown_future.done():
            self.shutdown_future.set_result(None)
        self.writer.accepting = False

    def refuse_if_shutting_down(self) -> None:
        if self.shutting_down:
            raise UnavailableError("receiver is shutting down", retry_after=1)

    async def directory_get(self, product_id: str) -> ProductAuth | None:
        self.refuse_if_shutting_down()
        with store.unavailable("looking up the product"):
            return await self.directory.get(product_id)


async def start(settings: Settings, migration_head: str | None) -> Runtime:
    url = settings.database_url_str()
    with store.unavailable("connecting"):
        pool = await store.create_pool(
            url, max_size=settings.db_pool_size, timeout=settings.db_timeout_seconds
        )
    metrics = Metrics()
    hub = Hub(
        pool, ring_size=settings.stream_ring_size, poll_seconds=settings.poll_seconds,
        confirmer=Confirmer(pool, settings.db_timeout_seconds), timeout=settings.db_timeout_seconds,
    )
    directory = Directory(pool)
    try:
        await check_hash_key(pool, settings)
    except BaseException:
        pool.terminate()
        raise
    hub.on_products_changed = directory.invalidate
    observe_commit = metrics.observe_commit
    if MULTIPROCESS:
        # A scrape reaches one worker and sets only its own pool gauges: the others keep theirs
        # fresh as they commit.
        def observe_commit(n: int, seconds: float) -> None:
            metrics.observe_commit(n, seconds)
            metrics.observe_pool(pool.get_size(), pool.get_idle_size())

    writer = Writer(
        pool, max_batch=settings.batch_max_events, on_commit=hub.published,
        observe=observe_commit, timeout=settings.db_timeout_seconds,
    )
    limits = Limits(
        auth_fail_limit=settings.auth_fail_limit,
        auth_fail_window=settings.auth_fail_window_seconds,
        ingest_rate=settings.ingest_rate_limit,
        ingest_burst=settings.ingest_burst,
    )
    rt = Runtime(
        settings=settings, pool=pool, hub=hub, writer=writer, directory=directory,
        limits=limits, metrics=metrics, migration_head=migration_head,
    )
    writer.prepare = _privacy_step(directory, settings.hash_key_bytes())
    writer.counted = metrics.observe_outcomes
    writer.start()
    await hub.start(store.asyncpg_dsn(url))
    rt.maintenance = retention.start_background(
        pool, retention.policy_from(settings), settings.maintenance_seconds
    )
    return rt


class ConfigurationError(RuntimeError):
    """The receiver must not start with this configuration."""


async def check_hash_key(pool: asyncpg.Pool, settings: Settings) -> None:
    """Refuse to start when a product hashes emails and RECEIVER_PII_HASH_KEY is not set."""
    if settings.pii_hash_key is not None:
        return
    with store.unavailable("reading privacy policies"):
        async with pool.acquire() as conn:
            hashing = await products.products_hashing_emails(conn)
    if hashing:
        raise ConfigurationError(
            "RECEIVER_PII_HASH_KEY is not set but these products hash emails: "
            + ", ".join(hashing[:10])
        )


def _privacy_step(directory: Directory, hash_key: bytes | None):  # type: ignore[no-untyped-def]
    """The writer's prepare hook: every event through its product's privacy policy."""

    async def prepare(items: Sequence[Pending]) -> list[Pending]:
        out = []
        for p in items:
            with store.unavailable("looking up the privacy policy"):
                auth = await directory.get(p.product_id)
            policy = auth.policy if auth is not None else privacy.DEFAULT
            out.append(replace(p, event=privacy.apply(policy, p.event, hash_key)))
        return out

    return prepare


async def stop(rt: Runtime) -> None:
    rt.begin_shutdown()
    await retention.stop_background(rt.maintenance)
    await rt.writer.drain_and_close()
    await rt.hub.close()
    try:
        await asyncio.wait_for(rt.pool.close(), 5)
    except (TimeoutError, Exception):  # noqa: BLE001 - a dead database must not hang shutdown
        rt.pool.terminate()
    rt.metrics.close()


def chain_exit_signals(rt: Runtime) -> Callable[[], None]:
    """On SIGTERM/SIGINT, refuse new work and end streams *before* the server drains.

    The server (uvicorn) only stops accepting and then waits for open connections, and SSE
    connections never finish by themselves. So we chain in front of whatever handler the
    server installed, in every worker process, and schedule ``begin_shutdown`` on the loop
    (``call_soon_threadsafe``: a signal handler must not touch futures directly). Returns a
    function that restores the previous handlers. A no-op off the main thread (tests).
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(rt.begin_shutdown)
        prev = previous.get(signum)
        if callable(prev):
            prev(signum, frame)
        elif prev == signal.SIG_DFL and signum == signal.SIGINT:
            raise KeyboardInterrupt

    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.getsignal(signum)
        signal.signal(signum, handler)

    def restore() -> None:
        for signum, prev in previous.items():
            if signal.getsignal(signum) is handler:
                signal.signal(signum, prev)

    return restore
