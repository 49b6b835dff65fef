"""Short garbage-collection pauses with thousands of open streams.

Every open SSE connection keeps a few hundred container objects alive (the server's protocol
and parser, the ASGI scope, one suspended coroutine frame per middleware layer, the
subscriber's task). CPython's full (generation-2) collection walks all of them: 0.5-0.9 s
with 5,000 subscribers on the benchmark machine, during which no frame is written, and it
comes round every few seconds while events are fanned out (docs/bench/gc-fanout.txt).

The policy: the moment CPython finishes a full collection, whatever survived it is live, so
we move it out of the collector's sight (``gc.freeze``, from a ``gc.callbacks`` hook: freezing
any later would also freeze the garbage made in between); later full collections examine
only what was allocated since. Frozen objects are still freed by reference counting the
moment they are unreferenced; only reference *cycles* among them wait. Every
``rescan_seconds`` we hand the frozen objects back (``gc.unfreeze``), so the next full
collection examines, and reclaims, everything: one long pause per interval instead of one
every few seconds.

It is process-wide (the collector is), so ``receiver serve`` starts it once per worker
process; it is off in library use (tests embed several receivers in one process).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from typing import Any

log = logging.getLogger("receiver.heap")


class FreezeSurvivors:
    """Freeze the survivors of each full collection; give them back every ``rescan_seconds``.

    ``rescan_seconds`` 0: never give them back before :meth:`run` ends (cycles among frozen
    objects are then only reclaimed at shutdown).
    """

    def __init__(self, rescan_seconds: float, check_seconds: float = 1.0) -> None:
        self.rescan_seconds = rescan_seconds
        self.check_seconds = check_seconds
        self.freezes = 0
        self.rescans = 0
        # Set (on the event loop) after freezes or a rescan, so tests can wait for a step.
        self.stepped = asyncio.Event()

    def _after_collection(self, phase: str, info: dict[str, Any]) -> None:
        # Runs inside the collector, at whatever allocation triggered it: freeze and count,
        # nothing else (no logging, no asyncio: neither is safe to re-enter from here).
        if phase == "stop" and info["generation"] == 2:
            gc.freeze()
            self.freezes += 1

    async def run(self) -> None:
        gc.callbacks.append(self._after_collection)
        try:
            # Start-up garbage goes first; what survives (modules, the app) is frozen by the hook.
            gc.collect()
            seen = self.freezes
            self.stepped.set()
            last_rescan = time.monotonic()
            while True:
                await asyncio.sleep(self.check_seconds)
                if self.rescan_seconds > 0 and time.monotonic() - last_rescan >= self.rescan_seconds:
                    gc.unfreeze()  # the next full collection examines everything again
                    last_rescan = time.monotonic()
                    self.rescans += 1
                    self._log("rescan")
                    self.stepped.set()
                if self.freezes != seen:
                    seen = self.freezes
                    self._log("freeze")
                    self.stepped.set()
        finally:
            with contextlib.suppress(ValueError):
                gc.callbacks.remove(self._after_collection)
            gc.unfreeze()

    def _log(self, what: str) -> None:
        if log.isEnabledFor(logging.DEBUG):  # get_freeze_count() walks every frozen object
            log.debug("gc %s: %d freezes, %d objects frozen", what, self.freezes,
                      gc.get_freeze_count())


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
