"""Helpers shared by the controller and the load-generating child processes.

Kept free of receiver imports so the child processes (load generator, SSE clients) start
fast and stay small.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
VENV_BIN = Path(PY).parent

# One webhook body, as the tutorial's Hog destination forwards an $autocapture click. The
# placeholders are printf-style so the wrk Lua script (string.format) and Python (%) fill the
# very same template: %s uuid, %.6f timestamp (epoch seconds; the e2e scenarios read it back
# as the frame's timestamp_start), %d session number, %d user number.
BODY_TEMPLATE = (
    '{"event":"$autocapture","referrer":"","timestamp":%.6f,"element_id":"",'
    '"event_type":"click","session_id":"s-%d","current_url":'
    '"https://app.example.com/team/42/settings?tab=members","distinct_id":"user-%d",'
    '"email":"person@example.com","elements_chain":"button.btn:nth-child=\\"1\\"'
    'nth-of-type=\\"1\\"text=\\"Invite member\\";div.toolbar:nth-child=\\"2\\"nth-of-type=\\"1\\";'
    'body:nth-child=\\"1\\"nth-of-type=\\"1\\"","input_field_name":"","link_destination":"",'
    '"button_or_link_text":"Invite member","uuid":"%s","$el_text":"Invite member"}'
)
SESSIONS = 500


def body(uuid: str, ts: float, n: int) -> bytes:
    return (BODY_TEMPLATE % (ts, n % SESSIONS, n % SESSIONS, uuid)).encode()


def uuid_for(prefix: int, n: int) -> str:
    """A valid, unique-per-(prefix, n) UUID without the cost of uuid4()."""
    return f"{prefix & 0xFFFFFFFF:08x}-{(prefix >> 32) & 0xFFFF:04x}-4000-8000-{n:012x}"


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted sequence (q in 0..100)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def summarize_ms(values_s: Iterable[float]) -> dict[str, Any]:
    v = sorted(x * 1000.0 for x in values_s)
    return {
        "n": len(v),
        "p50_ms": _r(percentile(v, 50)),
        "p90_ms": _r(percentile(v, 90)),
        "p99_ms": _r(percentile(v, 99)),
        "p999_ms": _r(percentile(v, 99.9)),
        "max_ms": _r(v[-1] if v else None),
        "mean_ms": _r(sum(v) / len(v) if v else None),
    }


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    """Resident set size of one process, from /proc (kB as the kernel reports it)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def tree_rss_kib(pid: int) -> int:
    """RSS of a process and all its descendants (for --workers N supervisors)."""
    total = 0
    for p in [pid, *descendants(pid)]:
        with contextlib.suppress(FileNotFoundError, RuntimeError):
            total += rss_kib(p)
    return total


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return out
    for c in children:
        out.append(int(c))
        out.extend(descendants(int(c)))
    return out


class Procs:
    """Every child process the controller starts, so each one is stopped, whatever happens."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[Any]] = []

    def start(self, args: list[str], **kw: Any) -> subprocess.Popen[Any]:
        # Own process group: SIGTERM to the group reaches uvicorn's worker processes too.
        p = subprocess.Popen(args, start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen[Any], timeout: float = 15.0) -> None:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
        # Workers of a supervisor that died first: clear the group as well.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self) -> None:
        for p in list(reversed(self.procs)):
            self.stop(p)


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen[Any] | None = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited early ({proc.returncode}) while waiting for {url}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code < 500:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def dump_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
