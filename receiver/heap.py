"""Short garbage-collection pauses with thousands of open streams.

Every open SSE connection keeps a few hundred container objects alive (the server's protocol
and parser, the ASGI scope, one suspended coroutine frame per middleware layer, the
subscriber's task). CPython's full (generation-2) collection walks all of them: 0.5-0.9 s
with 5,000 subscribers on the benchmark machine, during which no frame is written, and it
comes round every few seconds while events are fanned out (docs/bench/gc-fanout.txt).

The policy: when CPython has finished a full collection, whatever survived it is live, so we
move it out of the collector's sight (``gc.freeze``); later full collections examine only
what was allocated since. Frozen objects are still freed by reference counting the moment
they are unreferenced; only reference *cycles* among them wait. Every ``rescan_seconds`` we
hand the frozen objects back (``gc.unfreeze``), so the next full collection examines, and
reclaims, everything: one long pause per interval instead of one every few seconds.

It is process-wide (the collector is), so ``receiver serve`` starts it once per worker
process; it is off in library use (tests embed several receivers in one process).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time

log = logging.getLogger("receiver.heap")


def full_collections() -> int:
    return int(gc.get_stats()[-1]["collections"])


class FreezeSurvivors:
    """Freeze the survivors of each full collection; give them back every ``rescan_seconds``."""

    def __init__(self, rescan_seconds: float, check_seconds: float = 1.0) -> None:
        self.rescan_seconds = rescan_seconds
        self.check_seconds = check_seconds
        self.freezes = 0
        self.rescans = 0
        # Set after each freeze or rescan, so tests can wait for a step instead of sleeping.
        self.stepped = asyncio.Event()

    async def run(self) -> None:
        # Start-up objects (modules, the app, settings) live as long as the process.
        gc.freeze()
        self._stepped(frozen=True)
        seen = full_collections()
        last_rescan = time.monotonic()
        try:
            while True:
                await asyncio.sleep(self.check_seconds)
                if self.rescan_seconds > 0 and time.monotonic() - last_rescan >= self.rescan_seconds:
                    gc.unfreeze()
                    last_rescan = time.monotonic()
                    # Nothing is frozen again until a full collection has examined it all.
                    seen = full_collections()
                    self._stepped(frozen=False)
                    continue
                now = full_collections()
                if now != seen:
                    seen = now
                    gc.freeze()
                    self._stepped(frozen=True)
        finally:
            gc.unfreeze()

    def _stepped(self, *, frozen: bool) -> None:
        if frozen:
            self.freezes += 1
        else:
            self.rescans += 1
        if log.isEnabledFor(logging.DEBUG):  # get_freeze_count() walks every frozen object
            log.debug("gc %s: %d objects frozen", "freeze" if frozen else "rescan",
                      gc.get_freeze_count())
        self.stepped.set()


_running: asyncio.Task[None] | None = None


def start(rescan_seconds: float) -> asyncio.Task[None] | None:
    """Run the policy in this process (once; a second call returns None)."""
    global _running
    if _running is not None and not _running.done():
        return None
    _running = asyncio.get_running_loop().create_task(
        FreezeSurvivors(rescan_seconds).run(), name="gc-freeze-survivors"
    )
    return _running


async def stop(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
