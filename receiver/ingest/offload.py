"""CPU-heavy ingest steps on a worker thread, so the event loop keeps answering.

Parsing, normalizing and scrubbing a large body is pure Python and C work with no I/O: done on
the event loop, a 1 MiB body would hold every other request (``/healthz`` included) for as long
as it takes. Steps whose input is larger than ``RECEIVER_OFFLOAD_BYTES`` run here instead, on
one thread per process; the loop thread then gets the interpreter back at least every
``sys.getswitchinterval()`` (5 ms) and whenever a C step releases it. Small bodies, the common
case, stay inline: a thread hand-off costs more than their work.

The budget is structural: every step is linear in an input the request budgets already cap
(:mod:`receiver.ingest.budget`), and at most ``RECEIVER_OFFLOAD_QUEUE`` large bodies wait per
process, past which a request is refused with 503 and Retry-After (senders retry it), so a flood
of large bodies queues neither memory nor work without bound.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from receiver.errors import UnavailableError

T = TypeVar("T")


class Offload:
    def __init__(self, *, threshold_bytes: int, max_queued: int) -> None:
        self.threshold_bytes = threshold_bytes
        self.max_queued = max_queued
        self.queued = 0
        # Counters for /metrics and the tests: how many steps ran where.
        self.inline_runs = 0
        self.offloaded_runs = 0
        self.refused = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="receiver-cpu")

    def inline(self, size: int) -> bool:
        return size <= self.threshold_bytes

    async def run(self, size: int, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``: inline when ``size`` (bytes of input) is small, else on the
        worker thread. Exceptions propagate unchanged."""
        if self.inline(size):
            self.inline_runs += 1
            return fn(*args, **kwargs)
        if self.queued >= self.max_queued:
            self.refused += 1
            raise UnavailableError(
                "too many large requests are being processed; retry shortly", retry_after=1
            )
        self.queued += 1
        self.offloaded_runs += 1
        try:
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(
                self._executor, functools.partial(fn, *args, **kwargs)
            )
        finally:
            self.queued -= 1
        return result

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
