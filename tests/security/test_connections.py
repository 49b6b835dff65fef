"""Connection hygiene of ``receiver serve`` (issue 14, finding 5).

* Tens of thousands of connections that never finish their headers used to exhaust the file
  descriptors, and ``/healthz`` stopped answering: now the longest-idle of them is closed to
  admit a new connection, and every one is closed after ``RECEIVER_HEADER_TIMEOUT_SECONDS``.
* An unterminated header was buffered whole (256 MiB grew the process to 427 MiB): now 431 and
  close past ``RECEIVER_MAX_HEADER_BYTES``.
* Requests in progress are bounded (``RECEIVER_MAX_CONCURRENT_REQUESTS``): past it a clear 503
  with Retry-After, and a body still incomplete after ``RECEIVER_BODY_TIMEOUT_SECONDS`` is 408.

The receiver runs as a real ``receiver serve`` process (uvloop, the guarded httptools protocol).
"""

from __future__ import annotations

import contextlib
import os
import resource
import select
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, VENV_BIN, free_port
from tests.faults.kit import show, wait_for

RECEIVER_FDS = 4096  # the served process's open-file limit in the flood test


@contextlib.contextmanager
def serve(database_url: str, tmp_path: Path, *, nofile: int | None = None,
          **env: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    full = {**os.environ, "RECEIVER_DATABASE_URL": database_url, "RECEIVER_PORT": str(port),
            "RECEIVER_HOST": "127.0.0.1", "RECEIVER_LOG_LEVEL": "WARNING", **env}

    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    log = (tmp_path / f"serve-{port}.log").open("wb")
    proc = subprocess.Popen([str(VENV_BIN / "receiver"), "serve"], env=full, cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT, preexec_fn=limit)
    base = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            assert proc.poll() is None, (tmp_path / f"serve-{port}.log").read_text()[-2000:]
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
            return False

        wait_for(ready, timeout=60, what="receiver serve")
        yield proc, base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536, socket.MSG_DONTWAIT | socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def eof_within(sock: socket.socket, seconds: float) -> bool:
    """Read until the peer closes (True) or ``seconds`` pass (False)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([sock], [], [], left)
        if ready:
            try:
                if sock.recv(65536) == b"":
                    return True
            except OSError:
                return True
    return False


def test_idle_half_open_connections_never_stop_healthz(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    count = min(20_000, soft - 500)  # as many as this process may open, at most 20,000
    assert count > 2 * RECEIVER_FDS, "raise the open-file limit: the flood must outnumber it"
    socks: list[socket.socket] = []
    with serve(database_url, tmp_path, nofile=RECEIVER_FDS) as (proc, base):
        port = int(base.rsplit(":", 1)[1])
        try:
            for i in range(count):
                s = socket.socket()
                s.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    s.connect(("127.0.0.1", port))
                if i % 3 == 1:  # a third start a request and stall in its headers
                    with contextlib.suppress(OSError):
                        s.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                socks.append(s)
            statuses = []
            with httpx.Client(timeout=30) as c:
                for _ in range(5):
                    statuses.append(c.get(f"{base}/healthz", headers={"Connection": "close"}).status_code)
            closed = sum(closed_by_peer(s) for s in socks)
            alive = proc.poll() is None
        finally:
            for s in socks:
                s.close()
    assert statuses == [200] * 5 and alive
    # The receiver made room by closing idle ones: at most its descriptor budget stay open.
    assert closed >= count - RECEIVER_FDS, (closed, count)
    show(capsys, "connections/idle-flood", idle_connections=count, receiver_fd_limit=RECEIVER_FDS,
         closed_by_receiver=closed, healthz=statuses)


def test_headers_must_arrive_in_time(database_url: str, tmp_path: Path) -> None:
    with serve(database_url, tmp_path, RECEIVER_HEADER_TIMEOUT_SECONDS="1") as (_proc, base):
        port = int(base.rsplit(":", 1)[1])
        silent = socket.create_connection(("127.0.0.1", port))
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never the blank line
        try:
            assert eof_within(silent, 15) and eof_within(slow, 15)
            # Complete requests on a kept-alive connection are not affected.
            with httpx.Client(timeout=10) as c:
                assert [c.get(f"{base}/healthz").status_code for _ in range(3)] == [200] * 3
        finally:
            silent.close()
            slow.close()


def test_an_unterminated_header_is_cut_off(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cap = 64 * 1024
    with serve(database_url, tmp_path, RECEIVER_MAX_HEADER_BYTES=str(cap)) as (proc, base):
        port = int(base.rsplit(":", 1)[1])
        before = rss_kib(proc.pid)
        s = socket.create_connection(("127.0.0.1", port))
        s.settimeout(10)
        sent = 0
        chunk = b"a" * 65536
        try:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Huge: ")
            while sent < 64 * 1024 * 1024:
                s.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the receiver closed the connection: what we want
        finally:
            s.close()
        grown_mib = (rss_kib(proc.pid) - before) / 1024
        healthy = httpx.get(f"{base}/healthz", timeout=10).status_code
    # Socket buffers absorb a few MiB before the close is seen; nothing near 64 MiB.
    assert sent < 16 * 1024 * 1024, sent
    assert grown_mib < 16, grown_mib
    assert healthy == 200
    show(capsys, "connections/huge-header", cap_bytes=cap, accepted_before_close=sent,
         rss_growth_mib=f"{grown_mib:.1f}")


def test_requests_in_progress_are_bounded_and_slow_bodies_time_out(
    receiver_factory: Callable[..., Any], make_product: Callable[..., Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    live = receiver_factory(max_concurrent_requests=2, body_timeout_seconds=3)
    port = live.settings.port
    slow = []
    for _ in range(2):  # two requests whose bodies never finish: they hold both slots
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /webhook/whatever HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"event\":")
        slow.append(s)
    try:
        def refused() -> httpx.Response | None:
            r = httpx.post(f"{live.base_url}/e/", content=b"[]", timeout=10)
            return r if r.status_code == 503 else None

        r = wait_for(refused, timeout=10, what="the third request to be refused")
        assert int(r.headers["retry-after"]) >= 1 and "in progress" in r.json()["detail"]
        assert httpx.get(f"{live.base_url}/healthz", timeout=10).status_code == 200
        # The held requests end with 408 once their bodies are late, and the slots free up.
        answers = []
        for s in slow:
            s.settimeout(15)
            answers.append(s.recv(200).split(b"\r\n", 1)[0])
        assert answers == [b"HTTP/1.1 408 Request Timeout"] * 2, answers
        assert httpx.post(f"{live.base_url}/e/", content=b"[]", timeout=10).status_code == 400
    finally:
        for s in slow:
            s.close()
    show(capsys, "connections/concurrency", limit=2, third="503", slow_bodies="408")
