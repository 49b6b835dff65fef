"""store.append has two paths (one statement for small batches, statements + COPY for large
ones): both must assign the same gap-free positions and session indexes, drop the same
duplicates, store the same rows, and send one NOTIFY per commit."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from receiver.errors import NotFoundError
from receiver.ingest import normalize
from receiver.storage import store
from receiver.storage.store import Pending

BASE = datetime(2026, 1, 1, tzinfo=UTC)


def _pending(product: str, n: int, session: str | None, uuid: str | None = None) -> Pending:
    at = BASE + timedelta(microseconds=n)
    raw = {
        "event": "$pageview", "distinct_id": f"u{n % 3}", "session_id": session,
        "current_url": f"https://example.com/p/{n}", "timestamp": at.isoformat(),
        "uuid": uuid or f"00000000-0000-4000-8000-{n:012x}",
    }
    return Pending(product, at, normalize.from_webhook(raw, received_at=at))


async def _products(conn: asyncpg.Connection, *product_ids: str) -> None:
    for pid in product_ids:
        await conn.execute(
            "INSERT INTO products (product_id, contact_email, capture_token) "
            "VALUES ($1, 'x@example.com', $2)", pid, f"tok-{pid}",
        )


async def _run(url: str, single_max: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "SINGLE_STATEMENT_MAX", single_max)
    pool = await store.create_pool(url, max_size=2, timeout=10)
    notes: list[str] = []
    listener = await asyncpg.connect(store.asyncpg_dsn(url))
    await listener.add_listener(store.NOTIFY_EVENTS, lambda *a: notes.append(a[3]))
    try:
        async with pool.acquire() as conn:
            await _products(conn, "a", "b")
            n = 0
            expected_positions = {"a": 0, "b": 0}
            for size in (1, 3, 40, 7, 64):
                batch = []
                for _ in range(size):
                    n += 1
                    batch.append(_pending("ab"[n % 2], n, f"s{n % 4}" if n % 5 else None))
                # A duplicate inside the batch and one of an already stored event.
                batch.append(batch[0])
                if n > size:
                    batch.append(_pending("a", 2, "s2"))
                results = await store.append(conn, batch)
                assert len(results) == len(batch)
                assert results[size].position is None  # in-batch duplicate
                if n > size:
                    assert results[-1].position is None  # stored before
                for p, r in zip(batch[:size], results[:size], strict=True):
                    expected_positions[p.product_id] += 1
                    assert r.position == expected_positions[p.product_id]
                    assert r.row is not None and r.row.position == r.position
            rows = await conn.fetch(
                "SELECT product_id, position, session_id, session_index FROM events "
                "ORDER BY product_id, position"
            )
            assert [r["position"] for r in rows if r["product_id"] == "a"] == list(
                range(1, expected_positions["a"] + 1)
            )
            heads = dict(await conn.fetch("SELECT product_id, last_position FROM products"))
            assert heads == expected_positions
            by_session: dict[tuple[str, str], list[int]] = {}
            for r in rows:
                by_session.setdefault((r["product_id"], r["session_id"] or ""), []).append(
                    r["session_index"]
                )
            for idx in by_session.values():
                assert idx == list(range(len(idx)))  # gap-free, in position order
            # A session that gets a new event is seen again (retention prunes idle ones).
            await conn.execute("UPDATE session_counters SET last_seen_at = '2000-01-01'")
            await store.append(conn, [_pending("a", 20_000, "s2")])  # an existing session
            assert await conn.fetchval(
                "SELECT last_seen_at > now() - interval '1 minute' FROM session_counters "
                "WHERE product_id = 'a' AND session_id = 's2'"
            )
            with pytest.raises(NotFoundError):
                await store.append(conn, [_pending("gone", 10_000, "s")])
            assert await conn.fetchval("SELECT count(*) FROM events WHERE product_id='gone'") == 0
            # Notifications arrive in commit order: once a later sentinel is in, every
            # notification of the batches above is too.
            await conn.execute("SELECT pg_notify($1, 'sentinel')", store.NOTIFY_EVENTS)
        async with asyncio.timeout(10):
            while "sentinel" not in notes:
                await asyncio.sleep(0.01)
        # One per committed batch (five, then the one-event batch), none for the failed one.
        assert len(notes[: notes.index("sentinel")]) == 6
    finally:
        await listener.close()
        await pool.close()


@pytest.mark.parametrize("single_max", [0, 32, 10_000], ids=["copy", "mixed", "single"])
def test_append_paths_agree(
    database_url: str, single_max: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    asyncio.run(_run(database_url, single_max, monkeypatch))


async def _concurrent(url: str) -> dict[str, int]:
    """Three connections appending to the same products and sessions at once."""
    pool = await store.create_pool(url, max_size=3, timeout=10)
    try:
        async with pool.acquire() as conn:
            await _products(conn, "cc1", "cc2")

        async def writer(k: int) -> int:
            stored = 0
            async with pool.acquire() as conn:
                for r in range(60):
                    base = 1_000_000 * (k + 1) + 100 * r
                    # Both products and the same three sessions in every batch of every writer.
                    batch = [
                        _pending(("cc1", "cc2")[j % 2], base + j, f"s{j % 3}") for j in range(6)
                    ]
                    stored += sum(1 for a in await store.append(conn, batch) if a.position)
            return stored

        counts = await asyncio.gather(*(writer(k) for k in range(3)))
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT product_id, position, session_id, session_index FROM events "
                "WHERE product_id IN ('cc1', 'cc2') ORDER BY product_id, position"
            )
    finally:
        await pool.close()
    for pid in ("cc1", "cc2"):
        assert [r["position"] for r in rows if r["product_id"] == pid] == list(range(1, 541))
    by_session: dict[tuple[str, str], list[int]] = {}
    for r in rows:
        by_session.setdefault((r["product_id"], r["session_id"]), []).append(r["session_index"])
    assert all(idx == list(range(len(idx))) for idx in by_session.values())
    return {"stored": sum(counts)}


def test_concurrent_appends_on_the_same_products_and_sessions(database_url: str) -> None:
    """Three writers at once: positions and session indexes stay gap-free, nothing deadlocks."""
    try:
        result = asyncio.run(_concurrent(database_url))
    except asyncpg.DeadlockDetectedError as exc:  # pragma: no cover - the failure being guarded
        pytest.fail(f"concurrent appends deadlocked: {exc}")
    assert result == {"stored": 1080}


# Plans Postgres may pick for the one-statement append: the lock order must not depend on it.
PLANS = {
    "default": [],
    "hash-joins": ["SET enable_nestloop = off", "SET enable_mergejoin = off"],
    "no-hash-joins": ["SET enable_hashjoin = off"],
}


async def _counter_locked_while_waiting_for_product(url: str, plan: list[str]) -> bool:
    dsn = store.asyncpg_dsn(url)
    holder, writer, probe = [await asyncpg.connect(dsn) for _ in range(3)]
    await store._init_connection(writer)  # the pool's JSON codecs
    try:
        pid = "lo" + uuid.uuid4().hex[:8]
        await _products(holder, pid)
        # A committed counter row, so the append's upsert has an existing row to lock.
        await holder.execute(
            "INSERT INTO session_counters (product_id, session_id, next_index) VALUES ($1, 's1', 0)",
            pid,
        )
        for statement in plan:
            await writer.execute(statement)
        tx = holder.transaction()
        await tx.start()
        await holder.execute("SELECT 1 FROM products WHERE product_id = $1 FOR UPDATE", pid)
        append = asyncio.create_task(store.append(writer, [_pending(pid, 1, "s1")]))
        try:
            async with asyncio.timeout(10):
                while not await probe.fetchval(
                    "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1",
                    writer.get_server_pid(),
                ):
                    await asyncio.sleep(0.01)
            # The append now waits for the product row. Does it already hold the counter?
            try:
                await probe.execute(
                    "SELECT 1 FROM session_counters WHERE product_id = $1 AND session_id = 's1' "
                    "FOR UPDATE NOWAIT", pid,
                )
                held = False
            except asyncpg.LockNotAvailableError:
                held = True
        finally:
            await tx.rollback()
        [stored] = await append
        assert stored.position == 1 and stored.session_index == 0
        return held
    finally:
        for conn in (holder, writer, probe):
            await conn.close()


@pytest.mark.parametrize("plan", list(PLANS))
def test_a_session_counter_is_locked_only_after_its_product(database_url: str, plan: str) -> None:
    """The lock order that keeps concurrent writers from deadlocking, under any plan.

    A counter of product P is only touched while P's row is locked (held to commit), so two
    transactions on the same session serialize on P instead of deadlocking (Postgres would
    abort one after deadlock_timeout, 1 s, and the writer would retry).
    """
    assert asyncio.run(_counter_locked_while_waiting_for_product(database_url, PLANS[plan])) is False


async def _mixed_batch_with_a_deleted_product(url: str) -> tuple[int, int]:
    conn = await asyncpg.connect(store.asyncpg_dsn(url))
    await store._init_connection(conn)
    try:
        await _products(conn, "mx1")
        with pytest.raises(NotFoundError):
            await store.append(conn, [_pending("mx1", 1, "s"), _pending("mx-gone", 2, "s")])
        events = await conn.fetchval("SELECT count(*) FROM events WHERE product_id = 'mx1'")
        head = await conn.fetchval("SELECT last_position FROM products WHERE product_id = 'mx1'")
        return events, head
    finally:
        await conn.close()


def test_a_batch_with_a_deleted_product_stores_nothing(database_url: str) -> None:
    """All or nothing: the live product's event is not stored either (the sender retries)."""
    assert asyncio.run(_mixed_batch_with_a_deleted_product(database_url)) == (0, 0)
