"""receiver.ops.heap: full collections skip what survived the last one; nothing leaks for good.

The fan-out benchmark shows what this buys (docs/bench/gc-fanout.txt); these tests pin down
the two properties it must keep: survivors are frozen after a full collection, and reference
cycles among frozen objects are reclaimed at the next rescan (and when the policy stops).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref
from collections.abc import AsyncIterator, Callable

import pytest

from receiver.ops import heap


class Node:
    other: Node | None = None


async def until(cond: Callable[[], bool], policy: heap.FreezeSurvivors) -> None:
    async with asyncio.timeout(10):
        while not cond():
            policy.stepped.clear()
            if cond():
                return
            await policy.stepped.wait()


@pytest.fixture
def unfrozen() -> object:
    yield
    gc.unfreeze()


def cycle() -> tuple[Node, weakref.ref[Node]]:
    """Two nodes referring to each other (only the collector can free them), and a weak ref."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a, weakref.ref(a)


@contextlib.asynccontextmanager
async def running(policy: heap.FreezeSurvivors) -> AsyncIterator[None]:
    task = asyncio.create_task(policy.run())
    try:
        await until(lambda: policy.freezes >= 1, policy)  # start-up objects
        yield
    finally:
        await heap.stop(task)


async def test_survivors_of_a_full_collection_are_frozen_until_the_policy_stops(unfrozen: object) -> None:
    policy = heap.FreezeSurvivors(rescan_seconds=0, check_seconds=0.01)
    async with running(policy):
        a, ref = cycle()
        frozen = policy.freezes
        gc.collect()  # a full collection: our cycle survives it (still referenced) ...
        assert policy.freezes == frozen + 1  # ... and is frozen as it ends
        assert gc.get_freeze_count() > 0
        del a  # now it is garbage, but only a full collection of frozen objects finds it
        gc.collect()
        assert ref() is not None, "a frozen cycle was examined: freezing did nothing"
    assert gc.get_freeze_count() == 0
    assert policy._after_collection not in gc.callbacks
    gc.collect()
    assert ref() is None, "the cycle outlived the policy"


async def test_garbage_is_collected_before_the_survivors_are_frozen(unfrozen: object) -> None:
    policy = heap.FreezeSurvivors(rescan_seconds=0, check_seconds=0.01)
    async with running(policy):
        a, ref = cycle()
        del a  # garbage before the collection: reclaimed by it, never frozen
        gc.collect()
        assert ref() is None


async def test_rescan_gives_frozen_cycles_back_to_the_collector(unfrozen: object) -> None:
    policy = heap.FreezeSurvivors(rescan_seconds=0.05, check_seconds=0.01)
    async with running(policy):
        a, ref = cycle()
        gc.collect()  # frozen as the collection ends
        del a
        gc.collect()
        assert ref() is not None  # frozen: not examined
        rescans = policy.rescans
        await until(lambda: policy.rescans > rescans, policy)
        # The first full collection after a rescan examines everything again.
        gc.collect()
        assert ref() is None, "a cycle frozen before the rescan was not reclaimed by it"


async def test_one_policy_per_process() -> None:
    first = heap.start(600)
    try:
        assert first is not None
        assert heap.start(600) is None  # a second app in the same process does not double it
    finally:
        await heap.stop(first)
    again = heap.start(600)
    assert again is not None
    await heap.stop(again)
