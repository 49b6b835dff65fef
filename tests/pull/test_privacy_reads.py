"""What agents read follows the product's privacy policy as it is now, and the read pool is read-only."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import pytest

from receiver.ingest import privacy
from receiver.storage import products, store
from tests.pull.helpers import Registered, hog, register_project

KEY = "k" * 32
APP = "https://app.example.com"


async def _set_policy(database_url: str, product_id: str, **policy: Any) -> None:
    conn = await asyncpg.connect(store.asyncpg_dsn(database_url))
    try:
        await products.set_policy(conn, product_id, privacy.Policy.from_json(policy))
    finally:
        await conn.close()


def _until(probe: Any, what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _post(p: Registered, user: str, url: str) -> None:
    r = p.post(hog("$pageview", user=user, session=str(uuid.uuid4()), url=url,
                   email="jane.doe@example.com"))
    assert r.status_code == 200, r.text


def test_a_stricter_policy_covers_what_was_stored_before(receiver_factory: Any, database_url: str) -> None:
    rcv = receiver_factory(pii_hash_key=KEY)
    p = register_project(rcv.base_url)
    _post(p, "u1", f"{APP}/billing?coupon=SECRET")
    _post(p, "jane.doe@example.com", f"{APP}/team")
    [before] = p.live("u1").json()["actions"]
    assert before["email"] == "jane.doe@example.com" and before["raw_url"].endswith("?coupon=SECRET")

    asyncio.run(_set_policy(database_url, p.product_id, email="hash", query="strip"))
    after = _until(lambda: (a := p.live("u1").json()["actions"]) and a[0]["email"] != before["email"]
                   and a[0], "the new policy")
    hashed = privacy.hash_email("jane.doe@example.com", KEY.encode())
    assert after["email"] == hashed
    assert after["raw_url"] == f"{APP}/billing" and "SECRET" not in str(after)

    # A user whose id is an email: found by the address an agent knows, stored before (plain) and
    # after (hashed) the change, and shown hashed.
    _post(p, "jane.doe@example.com", f"{APP}/projects")
    actions = p.live("jane.doe@example.com").json()["actions"]
    assert [a["canonical_url"] for a in actions] == [f"{APP}/team", f"{APP}/projects"]
    assert {a["user_id"] for a in actions} == {hashed}
    assert "jane.doe@example.com" not in str(actions)

    asyncio.run(_set_policy(database_url, p.product_id, email="drop"))
    dropped = _until(lambda: (a := p.live("u1").json()["actions"]) and a[0]["email"] is None and a,
                     "the drop policy")
    assert dropped[0]["email"] is None


def test_the_read_pool_is_read_only_with_a_statement_timeout(receiver_factory: Any) -> None:
    rcv = receiver_factory(read_timeout_ms=150)

    async def probe() -> tuple[str, str]:
        async with rcv.runtime.read_pool.acquire() as conn:
            with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
                await conn.execute("DELETE FROM events")
            with pytest.raises(asyncpg.QueryCanceledError):
                await conn.execute("SELECT pg_sleep(2)")
            return (await conn.fetchval("SHOW default_transaction_read_only"),
                    await conn.fetchval("SHOW statement_timeout"))

    assert asyncio.run_coroutine_threadsafe(probe(), rcv.loop).result(20) == ("on", "150ms")
