"""Everything a running receiver holds, created by the app's lifespan and torn down after it.

Handlers reach it as ``request.app.state.runtime``; nothing here is a module global, so one
process (a test) can run several receivers with different settings.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import Any

import asyncpg
from starlette.requests import Request

from receiver.delivery.hub import Hub
from receiver.delivery.push.service import PushService
from receiver.errors import UnavailableError
from receiver.ingest import privacy
from receiver.ingest.budget import Budget
from receiver.ingest.limits import UNKNOWN_SCOPE, Limits
from receiver.ingest.offload import Offload
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
    budget: Budget
    offload: Offload
    ticket_key: bytes  # signs the admin page's stream tickets (receiver.ops.admin)
    shutdown_future: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    maintenance: asyncio.Task[None] | None = None  # receiver.storage.retention background task
    # Agents' reads (live activity, MCP): their own read-only pool with a statement timeout, so
    # a burst of them never takes the writer's connections and no query runs unbounded.
    read_pool: Any = None
    push: PushService | None = None  # None when RECEIVER_PUSH_ENABLED is false

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

    async def find_product(self, request: Request, product_id: str) -> ProductAuth | None:
        """The product, or None; a lookup of a name not known to exist counts toward the
        client's failed-authentication limit (scans of made-up names end in 429)."""
        if not self.directory.known(product_id):
            self.limits.check_auth_block(request, UNKNOWN_SCOPE)
        product = await self.directory_get(product_id)
        if product is None:
            self.limits.auth_failed(request, UNKNOWN_SCOPE)
        return product

    async def find_capture_token(self, request: Request, token: str) -> ProductAuth | None:
        """The product owning a capture token, or None (counted like :meth:`find_product`)."""
        self.refuse_if_shutting_down()
        if not self.directory.known_token(token):
            self.limits.check_auth_block(request, UNKNOWN_SCOPE)
        with store.unavailable("looking up the capture token"):
            product = await self.directory.by_capture_token(token)
        if product is None:
            self.limits.auth_failed(request, UNKNOWN_SCOPE)
        return product


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
        ticket_key = await _ticket_key(pool)
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
        bytes_rate=settings.ingest_bytes_rate_limit,
        bytes_burst=settings.ingest_bytes_burst,
        read_rate=settings.read_rate_limit,
        read_burst=settings.read_burst,
    )
    # min_size=0: no connection is opened until an agent reads.
    read_pool = await store.create_pool(
        url, max_size=settings.read_pool_size, timeout=settings.db_timeout_seconds,
        server_settings={"statement_timeout": str(settings.read_timeout_ms)},
        # Read-only one-statement sessions leave nothing to reset: skip asyncpg's reset query,
        # a round trip per read.
        reset_on_release=False, read_only=True,
    )
    rt = Runtime(
        settings=settings, pool=pool, hub=hub, writer=writer, directory=directory,
        limits=limits, metrics=metrics, migration_head=migration_head, read_pool=read_pool,
        budget=budget_from(settings),
        offload=Offload(threshold_bytes=settings.offload_bytes, max_queued=settings.offload_queue),
        ticket_key=ticket_key,
    )
    writer.prepare = _privacy_step(directory, settings.hash_key_bytes(), rt.offload)
    writer.counted = metrics.observe_outcomes
    writer.start()
    if settings.push_enabled:
        rt.push = PushService(settings, database_url=url, metrics=metrics)
        await rt.push.start()
        hub.on_heads = rt.push.heads
        push_changed = rt.push.products_changed

        def products_changed(product_id: str | None) -> None:
            directory.invalidate(product_id)
            push_changed(product_id)

        hub.on_products_changed = products_changed
    await hub.start(store.asyncpg_dsn(url))
    rt.maintenance = retention.start_background(
        pool, retention.policy_from(settings), settings.maintenance_seconds
    )
    return rt


TICKET_KEY_NAME = "admin_stream_ticket"


async def _ticket_key(pool: asyncpg.Pool) -> bytes:
    """The installation's random ticket key, shared through Postgres by every process."""
    with store.unavailable("reading the server secrets"):
        async with pool.acquire() as conn:
            try:
                return await store.server_secret(conn, TICKET_KEY_NAME)
            except asyncpg.UndefinedTableError:
                # Migrations pending (/readyz says so): tickets then verify in this process only.
                log.warning("server_secrets is missing (migrations pending): stream tickets are "
                            "signed with a key of this process only")
                return secrets.token_bytes(32)


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


def budget_from(settings: Settings) -> Budget:
    return Budget(
        max_events=settings.max_events_per_request,
        max_request_nodes=settings.max_request_nodes,
        max_event_nodes=settings.max_event_nodes,
        max_depth=settings.max_json_depth,
        max_string_chars=settings.max_string_chars,
    )


def _privacy_step(directory: Directory, hash_key: bytes | None, offload: Offload):  # type: ignore[no-untyped-def]
    """The writer's prepare hook: every event through its product's privacy policy.

    Routes scrub their events themselves (off the event loop when large) and say with which
    policy; an event is scrubbed again here only when its product's policy is another one by
    now (changed meanwhile) or was never applied, so no route can store one that skipped it.
    """

    async def prepare(items: Sequence[Pending]) -> list[Pending]:
        todo: list[tuple[int, privacy.Policy]] = []
        for i, p in enumerate(items):
            with store.unavailable("looking up the privacy policy"):
                auth = await directory.get(p.product_id)
            policy = auth.policy if auth is not None else privacy.DEFAULT
            if p.policy is None or p.policy != policy:
                todo.append((i, policy))
        if not todo:
            return list(items)

        def scrub() -> list[Pending]:
            out = list(items)
            for i, policy in todo:
                out[i] = replace(
                    items[i], event=privacy.apply(policy, items[i].event, hash_key), policy=policy
                )
            return out

        return await offload.run(len(todo) * ESTIMATED_EVENT_BYTES, scrub)

    return prepare


# What an event weighs for the offload decision when only the count is known (posthog-js: 1-4 KB).
ESTIMATED_EVENT_BYTES = 2048


async def stop(rt: Runtime) -> None:
    rt.begin_shutdown()
    if rt.push is not None:
        await rt.push.close()
    await retention.stop_background(rt.maintenance)
    await rt.writer.drain_and_close()
    rt.offload.close()
    await rt.hub.close()
    for pool in (rt.read_pool, rt.pool):
        if pool is None:
            continue
        try:
            await asyncio.wait_for(pool.close(), 5)
        except (TimeoutError, Exception):  # noqa: BLE001 - a dead database must not hang shutdown
            pool.terminate()
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
