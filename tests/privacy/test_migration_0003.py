"""Migration 0003 (products.privacy_policy) from the previous head, with data, and back."""

from __future__ import annotations

import asyncio

from receiver.storage import migrate
from tests.privacy.helpers import fetch


async def _exec(url: str, sql: str) -> None:
    import asyncpg

    from receiver.storage.store import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def test_0003_from_0002_keeps_products_with_the_default_policy(empty_database_url: str) -> None:
    url = empty_database_url
    migrate.upgrade(url, "0002")
    asyncio.run(
        _exec(
            url,
            "INSERT INTO products (product_id, contact_email, capture_token) "
            "VALUES ('old', 'ops@example.com', 'phc_old')",
        )
    )
    migrate.upgrade(url, "0003")
    [row] = asyncio.run(fetch(url, "SELECT product_id, privacy_policy::text AS p FROM products"))
    assert (row["product_id"], row["p"]) == ("old", "{}")
    comment = asyncio.run(
        fetch(url, "SELECT col_description('products'::regclass, attnum) AS c FROM pg_attribute "
                   "WHERE attrelid = 'products'::regclass AND attname = 'privacy_policy'")
    )
    assert "PII policy" in comment[0]["c"]
    migrate.downgrade(url, "0002")
    cols = asyncio.run(
        fetch(url, "SELECT column_name FROM information_schema.columns WHERE table_name = 'products'")
    )
    assert "privacy_policy" not in {c["column_name"] for c in cols}
    migrate.upgrade(url)
    [row] = asyncio.run(fetch(url, "SELECT privacy_policy::text AS p FROM products"))
    assert row["p"] == "{}"
