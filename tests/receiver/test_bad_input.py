"""Bad input battery against a live receiver (issue #5, "Bad input battery").

Every case: a clear 4xx with a JSON ``detail``, nothing stored (rows counted in Postgres),
and the receiver keeps serving (a good post afterwards gets 200). Inputs that are odd but
legitimate (nulls in optional fields, unicode, very long URLs, big strings under the limit)
are accepted with 200 and stored exactly once, with every typed column bounded.
"""

from __future__ import annotations

import asyncio
import gzip
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest

from receiver.errors import BadRequestError, PayloadTooLargeError
from receiver.ingest import bodies, normalize
from receiver.settings import MIB, Settings
from tests.faults.kit import asql, count_events, hog_event, nodelay, show, sql

GOOD = {"event": "$pageview", "current_url": "https://app.example.com/home", "distinct_id": "u1"}


@pytest.fixture
def product(receiver: Any, make_product: Callable[..., Any]) -> Any:
    nodelay(receiver)
    return make_product()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as c:
        yield c


def post(
    client: httpx.Client, product: Any, content: bytes, *, content_type: str = "application/json",
    **headers: str,
) -> httpx.Response:
    hdrs = {"x-posthog-secret": product.webhook_secret, "content-type": content_type, **headers}
    return client.post(product.webhook_url, content=content, headers=hdrs)


def assert_rejected(
    r: httpx.Response, status: int, client: httpx.Client, product: Any, database_url: str
) -> str:
    """The answer is ``status`` with a JSON detail; nothing stored; the receiver still serves."""
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json")
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail
    assert count_events(database_url, product.product_id) == 0
    good = post(client, product, orjson.dumps({**GOOD, "uuid": str(uuid.uuid4())}))
    assert good.status_code == 200, good.text
    # Remove the probe so the next case starts from an empty table again.
    sql(database_url, "DELETE FROM events WHERE product_id = $1", product.product_id)
    return detail


def test_body_over_the_limit_is_413(
    client: httpx.Client, product: Any, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    big = orjson.dumps({**GOOD, "pad": "x" * MIB})
    detail = assert_rejected(post(client, product, big), 413, client, product, database_url)

    # Without a Content-Length (chunked upload) the cap is enforced while reading.
    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b" " * 65536

    r = client.post(
        product.webhook_url, content=chunks(),
        headers={"x-posthog-secret": product.webhook_secret, "content-type": "application/json"},
    )
    assert_rejected(r, 413, client, product, database_url)
    show(capsys, "bad-input/413", body_bytes=len(big), chunked_bytes=40 * 65536, detail=repr(detail))


def test_gzip_bomb_on_webhook_is_not_inflated(
    client: httpx.Client, product: Any, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # 64 MiB of zeros compresses to ~64 KiB: well under the body limit, a bomb if inflated.
    raw = b"\0" * (64 * MIB)
    bomb = gzip.compress(raw, compresslevel=9)
    assert len(bomb) < MIB
    started = time.monotonic()
    r = post(client, product, bomb)
    d1 = assert_rejected(r, 400, client, product, database_url)
    # With Content-Encoding: gzip the webhook still does not decompress: PostHog never
    # compresses its destination requests, so the body is read as is and is not JSON.
    r = post(client, product, bomb, **{"content-encoding": "gzip"})
    d2 = assert_rejected(r, 400, client, product, database_url)
    # A well-formed gzip of a valid event is refused the same way (not silently inflated).
    r = post(client, product, gzip.compress(orjson.dumps(GOOD)), **{"content-encoding": "gzip"})
    assert_rejected(r, 400, client, product, database_url)
    elapsed = time.monotonic() - started
    show(
        capsys, "bad-input/gzip-bomb", compressed=len(bomb), would_inflate_to=len(raw),
        seconds=f"{elapsed:.2f}", detail=repr(d1), detail_with_encoding=repr(d2),
    )


def test_gunzip_limited_caps_a_bomb(capsys: pytest.CaptureFixture[str]) -> None:
    """The capture endpoints' decompressor stops at the cap instead of inflating a bomb."""
    limit = 10 * MIB
    inflated = 64 * MIB
    bomb = gzip.compress(b"\0" * inflated, compresslevel=9)
    started = time.monotonic()
    with pytest.raises(PayloadTooLargeError):
        bodies.gunzip_limited(bomb, limit)
    seconds = time.monotonic() - started
    assert seconds < 5
    show(capsys, "bad-input/gunzip-cap", compressed=len(bomb), would_inflate_to=inflated,
         limit=limit, seconds=f"{seconds:.3f}")
    # zlib-wrapped too, and a truncated stream or garbage is a 400, not a crash.
    with pytest.raises(PayloadTooLargeError):
        bodies.gunzip_limited(zlib.compress(b"\0" * (16 * MIB)), limit)
    with pytest.raises(BadRequestError):
        bodies.gunzip_limited(gzip.compress(b'{"a": 1}')[:-12], limit)
    with pytest.raises(BadRequestError):
        bodies.gunzip_limited(b"not gzip at all", limit)
    assert bodies.gunzip_limited(gzip.compress(b'{"a": 1}'), limit) == b'{"a": 1}'
    exact = b"x" * limit
    assert bodies.gunzip_limited(gzip.compress(exact), limit) == exact


INVALID_UTF8 = [
    b'{"event": "\xff\xfe"}',
    b'{"event": "$pageview", "distinct_id": "\xc3\x28"}',
    b'{"event": "\xed\xa0\x80"}',  # an encoded surrogate is not valid UTF-8
    b'\xef\xbb\xbf{"event": "$pageview"}',  # a BOM before the object
    # "\ud800" is valid JSON syntax but no Unicode string: it must not reach Postgres.
    b'{"event": "$pageview", "distinct_id": "\\ud800"}',
]


def test_invalid_utf8_is_400(
    client: httpx.Client, product: Any, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    details = [
        assert_rejected(post(client, product, raw), 400, client, product, database_url)
        for raw in INVALID_UTF8
    ]
    show(capsys, "bad-input/invalid-utf8", cases=len(INVALID_UTF8), stored=0, details=details[:2])


def test_deep_nesting_is_400(
    client: httpx.Client, product: Any, database_url: str, capsys: pytest.CaptureFixture[str],
) -> None:
    # 10,000 deep exceeds the JSON parser's recursion limit; 100 deep parses but exceeds ours (64).
    for depth in (10_000, 100):
        nested = b'{"event": "$pageview", "x": ' + b"[" * depth + b"]" * depth + b"}"
        detail = assert_rejected(post(client, product, nested), 400, client, product, database_url)
        deep_obj = b'{"event": "$pageview", "x": ' + b'{"a":' * depth + b"1" + b"}" * depth + b"}"
        assert_rejected(post(client, product, deep_obj), 400, client, product, database_url)
        show(capsys, f"bad-input/nested-{depth}", bytes=len(nested), stored=0, detail=repr(detail))


def test_megabyte_strings(
    client: httpx.Client, product: Any, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    limit = Settings().max_body_bytes  # RECEIVER_MAX_BODY_BYTES, 512 KiB
    # Over the body limit: 413, nothing stored.
    over = orjson.dumps({**GOOD, "current_url": "https://a.example/" + "x" * (limit + 10)})
    assert_rejected(post(client, product, over), 413, client, product, database_url)

    # Just under it: accepted. The raw payload keeps the string whole (JSONB), while every
    # typed column is bounded (URLs at 8192 characters, labels and text far lower).
    n = limit - 2048
    body = {
        **GOOD,
        "uuid": str(uuid.uuid4()),
        "current_url": "https://app.example.com/" + "a" * (n // 2),
        "button_or_link_text": "b" * (n // 2 - 1024),
    }
    raw = orjson.dumps(body)
    assert len(raw) <= limit
    r = post(client, product, raw)
    assert r.status_code == 200, r.text
    rows = sql(
        database_url,
        "SELECT length(current_url) AS url, length(canonical_url) AS canon, length(title) AS title, "
        "length(description) AS descr, length(payload::text) AS payload FROM events "
        "WHERE product_id = $1",
        product.product_id,
    )
    assert len(rows) == 1
    row = rows[0]
    assert row["url"] <= normalize.MAX_URL_CHARS and row["canon"] <= normalize.MAX_URL_CHARS
    assert row["title"] <= 1000 and row["descr"] <= 1000
    assert row["payload"] >= n // 2
    show(
        capsys, "bad-input/1MB-strings", over_bytes=len(over), under_bytes=len(raw),
        stored_rows=len(rows), current_url_chars=row["url"], payload_chars=row["payload"],
    )


def test_wrong_content_type_is_415(
    client: httpx.Client, product: Any, database_url: str
) -> None:
    for content_type in ("application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                         "application/xml", "image/png"):
        r = post(client, product, orjson.dumps(GOOD), content_type=content_type)
        assert_rejected(r, 415, client, product, database_url)


def test_non_object_and_malformed_json_is_400(
    client: httpx.Client, product: Any, database_url: str
) -> None:
    cases = [b"[]", b"null", b"1", b'"x"', b"true", b"[{}]", b"", b"   ",
             b"{", b'{"event": }', b"{'event': 'x'}", b'{"event": "x"} trailing', b"NaN"]
    for raw in cases:
        assert_rejected(post(client, product, raw), 400, client, product, database_url)


def test_nulls_everywhere(
    client: httpx.Client, product: Any, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fields = [
        "event", "uuid", "distinct_id", "session_id", "email", "current_url", "referrer",
        "timestamp", "elements_chain", "event_type", "element_id", "input_field_name",
        "link_destination", "button_or_link_text", "$el_text", "person", "properties",
    ]
    all_null = {k: None for k in fields}
    detail = assert_rejected(
        post(client, product, orjson.dumps(all_null)), 400, client, product, database_url
    )
    # Every optional field null, the event named: accepted, stored once, streamed fields empty.
    for event in ("$pageview", "$autocapture", "custom thing"):
        body = {**all_null, "event": event}
        r = post(client, product, orjson.dumps(body))
        assert r.status_code == 200, r.text
    rows = sql(
        database_url,
        "SELECT event, action_type, session_id, distinct_id, email, current_url, title FROM events "
        "WHERE product_id = $1 ORDER BY position",
        product.product_id,
    )
    assert [r["event"] for r in rows] == ["$pageview", "$autocapture", "custom thing"]
    assert all(r["session_id"] is None and r["distinct_id"] is None for r in rows)
    # And a stock-template body ({"event": {...}, "person": null}) with null properties.
    r = post(client, product, orjson.dumps({"event": {"event": None, "properties": None}, "person": None}))
    assert r.status_code == 400
    assert "detail" in r.json()
    show(capsys, "bad-input/nulls", rejected_detail=repr(detail), accepted=len(rows))


def test_nul_characters_are_replaced_not_fatal(
    client: httpx.Client, product: Any, database_url: str
) -> None:
    # Postgres text and JSONB cannot hold U+0000: the receiver replaces it with U+FFFD in the
    # payload and every typed column (documented in receiver.ingest.normalize.sanitize_json).
    body = {
        "event": "$pageview\u0000", "distinct_id": "u\u00001", "current_url": "https://a.example/\u0000x",
        "email": "a\u0000@example.com", "extra": {"k\u0000": ["\u0000"]},
    }
    r = post(client, product, orjson.dumps(body))
    assert r.status_code == 200, r.text
    rows = sql(
        database_url,
        "SELECT event, distinct_id, payload::text AS p FROM events WHERE product_id = $1",
        product.product_id,
    )
    assert len(rows) == 1
    assert rows[0]["event"] == "$pageview\ufffd" and rows[0]["distinct_id"] == "u\ufffd1"
    assert "\\u0000" not in rows[0]["p"] and "\ufffd" in rows[0]["p"]


def test_unicode_and_very_long_urls(
    client: httpx.Client, product: Any, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    urls = [
        "https://例え.テスト/パス/😀?q=ü#frag",
        "https://app.example.com/\u202eevil\u202c/\u0301\u0301",
        "https://app.example.com/" + "é" * 20_000,
        "https://app.example.com/" + "/".join(str(i) for i in range(30_000)),
        "http://[::1]:99999999/not a url at all",
        "javascript:alert(1)",
        "//" + "a" * 100_000,
    ]
    for i, url in enumerate(urls):
        body = hog_event("uni", i, current_url=url, email="zoë@exämple.com", session_id="séance-😀")
        r = post(client, product, orjson.dumps(body))
        assert r.status_code == 200, (url[:80], r.text)
    rows = sql(
        database_url,
        "SELECT length(current_url) AS u, length(canonical_url) AS c, length(pathname) AS p, "
        "length(title) AS t FROM events WHERE product_id = $1",
        product.product_id,
    )
    assert len(rows) == len(urls)
    longest = max(max(r["u"] or 0, r["c"] or 0, r["p"] or 0) for r in rows)
    assert longest <= normalize.MAX_URL_CHARS
    assert all(r["t"] <= 1000 for r in rows)
    show(capsys, "bad-input/unicode-urls", posted=len(urls), stored=len(rows), longest_column=longest)


def test_identifiers_with_control_characters_are_400(
    client: httpx.Client, product: Any, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_sessions = ["abc\ndef", "tab\there", "esc\x1b[31m", "del\x7f", "cr\rx", "x" * 201]
    for session_id in bad_sessions:
        body = orjson.dumps({**GOOD, "session_id": session_id})
        assert_rejected(post(client, product, body), 400, client, product, database_url)
    for field in ("distinct_id", "event"):
        body = orjson.dumps({**GOOD, field: "a\r\nb"})
        assert_rejected(post(client, product, body), 400, client, product, database_url)
    # NUL alone is replaced by U+FFFD (as everywhere else), leaving a valid id: accepted.
    r = post(client, product, orjson.dumps({**GOOD, "session_id": "abc\x00"}))
    assert r.status_code == 200, r.text
    stored = sql(database_url, "SELECT session_id FROM events WHERE product_id = $1", product.product_id)
    assert [row[0] for row in stored] == ["abc\ufffd"]
    show(capsys, "bad-input/control-chars", rejected=len(bad_sessions) + 2, stored_from_rejected=0)


def test_odd_product_ids_are_404_not_500(client: httpx.Client, receiver: Any, product: Any,
                                         database_url: str) -> None:
    for pid in ("%00", "..", "x" * 300, "%F0%9F%98%80", "a%2Fb", "-lead", "a%20b"):
        r = client.post(
            f"{receiver.base_url}/webhook/{pid}", content=orjson.dumps(GOOD),
            headers={"x-posthog-secret": product.webhook_secret, "content-type": "application/json"},
        )
        assert r.status_code == 404, (pid, r.status_code, r.text)
        assert r.json()["detail"]
    assert count_events(database_url) == 0
    # A trailing slash is not a redirect (PostHog would drop a 3xx silently).
    r = client.post(product.webhook_url + "/", content=orjson.dumps(GOOD),
                    headers={"x-posthog-secret": product.webhook_secret})
    assert r.status_code == 404 and "location" not in r.headers


def test_bad_input_never_needs_auth_to_be_rejected_cheaply(
    client: httpx.Client, product: Any, database_url: str
) -> None:
    """Without the secret even a malformed body is a 401 (we do not parse for strangers)."""
    r = client.post(product.webhook_url, content=b"\xff" * 100,
                    headers={"content-type": "application/json"})
    assert r.status_code == 401 and r.json()["detail"]
    r = client.post(product.webhook_url, content=b"x" * (MIB + 1),
                    headers={"content-type": "application/json"})
    assert r.status_code == 413  # size is checked first: it needs no lookup at all
    assert count_events(database_url) == 0


async def test_many_bad_posts_then_good_ones(
    product: Any, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A concurrent burst of mixed garbage leaves the receiver healthy and stores nothing."""
    garbage: list[tuple[bytes, str]] = [
        (b"\xff", "application/json"), (b"[]", "application/json"), (b"{", "application/json"),
        (orjson.dumps(GOOD), "text/html"), (b'{"event": null}', "application/json"),
        (b"[" * 5000 + b"]" * 5000, "application/json"),
        (orjson.dumps({**GOOD, "session_id": "a\nb"}), "application/json"),
        (b"x" * (MIB + 1), "application/json"),
    ]
    statuses: dict[int, int] = {}
    sem = asyncio.Semaphore(16)

    async def one(ac: httpx.AsyncClient, k: int) -> None:
        raw, ctype = garbage[k % len(garbage)]
        async with sem:
            r = await ac.post(product.webhook_url, content=raw,
                              headers={"x-posthog-secret": product.webhook_secret, "content-type": ctype})
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        assert 400 <= r.status_code < 500 and r.json()["detail"], (k, r.status_code)

    async with httpx.AsyncClient(timeout=30) as ac:
        await asyncio.gather(*(one(ac, k) for k in range(400)))
        assert (await asyncpg_count(database_url, product.product_id)) == 0
        ok = await asyncio.gather(*(
            ac.post(product.webhook_url, content=orjson.dumps(hog_event("after", i)),
                    headers={"x-posthog-secret": product.webhook_secret})
            for i in range(20)
        ))
        assert [r.status_code for r in ok] == [200] * 20
        assert (await ac.get(product.base_url + "/readyz")).status_code == 200
    assert (await asyncpg_count(database_url, product.product_id)) == 20
    show(capsys, "bad-input/burst", garbage_sent=400, statuses=statuses, stored_from_garbage=0,
         good_after=20)


async def asyncpg_count(database_url: str, product_id: str) -> int:
    rows = await asql(database_url, "SELECT count(*) FROM events WHERE product_id = $1", product_id)
    return int(rows[0][0])


def test_products_unstorable_values_are_400_not_503(
    receiver: Any, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by Schemathesis: NUL characters or >64-bit numbers in a registration were a 503."""
    nodelay(receiver)
    base = {"contact_email": "a@b.example"}
    bodies = [
        {"product_id": "nul-config", **base, "integration_config": {"a": "\u0000"}},
        {"product_id": "nul-key", **base, "integration_config": {"\u0000": 1}},
        {"product_id": "nul-email", "contact_email": "a\u0000@b.example"},
        {"product_id": "nul-type", **base, "integration_type": "\u0000"},
        {"product_id": "nul-secret", **base, "webhook_secret": "\u0000" * 40},
        {"product_id": "big-int", **base, "integration_config": {"a": 2**70}},
        {"product_id": "nul-policy", **base, "privacy_policy": {"redact": ["a\u0000"]}},
    ]
    details = []
    with httpx.Client(timeout=10) as c:
        for body in bodies:
            r = c.post(f"{receiver.base_url}/products", json=body)
            assert r.status_code == 400, (body["product_id"], r.status_code, r.text)
            details.append(r.json()["detail"])
        ok = c.post(f"{receiver.base_url}/products", json={"product_id": "fine", **base})
        assert ok.status_code == 201
    rows = sql(database_url, "SELECT product_id FROM products")
    assert [r[0] for r in rows] == ["fine"]
    show(capsys, "bad-input/products", rejected=len(bodies), stored_from_rejected=0, details=details[:3])
