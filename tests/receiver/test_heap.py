"""receiver.heap: full collections skip what survived the last one; nothing leaks for good.

The fan-out benchmark shows what this buys (docs/bench/gc-fanout.txt); these tests pin down
the two properties it must keep: survivors are frozen after a full collection, and reference
cycles among frozen objects are reclaimed at the next rescan (and when the policy stops).
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Callable

import pytest

from receiver import heap


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


async def test_survivors_of_a_full_collection_are_frozen_until_the_policy_stops(unfrozen: object) -> None:
    policy = heap.FreezeSurvivors(rescan_seconds=0, check_seconds=0.01)
    task = asyncio.create_task(policy.run())
    try:
        await until(lambda: policy.freezes >= 1, policy)  # start-up objects
        a, b = Node(), Node()
        a.other, b.other = b, a
        ref = weakref.ref(a)
        frozen = policy.freezes
        gc.collect()  # a full collection: our cycle survives it (still referenced) ...
        await until(lambda: policy.freezes > frozen, policy)  # ... and is frozen after it
        assert gc.get_freeze_count() > 0
        del a, b  # now it is garbage, but only a full collection of frozen objects finds it
        gc.collect()
        assert ref() is not None, "a frozen cycle was examined: freezing did nothing"
    finally:
        await heap.stop(task)
    assert gc.get_freeze_count() == 0
    assert policy._after_collection not in gc.callbacks
    gc.collect()
    assert ref() is None, "the cycle outlived the policy"


async def test_garbage_is_collected_before_the_survivors_are_frozen(unfrozen: object) -> None:
    policy = heap.FreezeSurvivors(rescan_seconds=0, check_seconds=0.01)
    task = asyncio.create_task(policy.run())
    try:
        await until(lambda: policy.freezes >= 1, policy)
        a, b = Node(), Node()
        a.other, b.other = b, a
        ref = weakref.ref(a)
        del a, b  # garbage before the collection: reclaimed by it, never frozen
        frozen = policy.freezes
        gc.collect()
        assert policy.freezes == frozen + 1
        assert ref() is None
    finally:
        await heap.stop(task)


async def test_rescan_gives_frozen_cycles_back_to_the_collector(unfrozen: object) -> None:
    policy = heap.FreezeSurvivors(rescan_seconds=0.05, check_seconds=0.01)
    task = asyncio.create_task(policy.run())
    try:
        await until(lambda: policy.freezes >= 1, policy)
        a, b = Node(), Node()
        a.other, b.other = b, a
        ref = weakref.ref(a)
        frozen = policy.freezes
        gc.collect()
        await until(lambda: policy.freezes > frozen, policy)
        del a, b
        rescans = policy.rescans
        await until(lambda: policy.rescans > rescans, policy)
        # The first full collection after a rescan examines everything again.
        gc.collect()
        assert ref() is None, "a cycle frozen before the rescan was not reclaimed by it"
    finally:
        await heap.stop(task)


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
