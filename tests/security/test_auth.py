"""Authentication: constant-time comparisons, secret rotation with a grace window, failed-auth
lockout (429 + Retry-After) that stays cheap, and isolation between products.
"""

from __future__ import annotations

import ast
import asyncio
import hmac
import re
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from receiver import security
from receiver.storage import products
from receiver.storage.products import ProductAuth
from receiver.storage.store import asyncpg_dsn
from tests.conftest import register_product
from tests.faults.kit import asql, collect_stream, hog_event, new_product_id, nodelay, show

RECEIVER_DIR = Path(__file__).resolve().parents[2] / "receiver"


# --------------------------------------------------------------------------- constant time


SECRETISH = re.compile(r"secret|token|digest|sha256|password|stream_key|api_key|ticket|hash", re.I)


def test_no_plain_equality_on_secrets_in_receiver_code() -> None:
    """Structural: no ``==``/``!=``/``in`` between a secret-ish value and anything but a literal."""
    offenders = []
    for path in sorted(RECEIVER_DIR.glob("*.py")):
        src = path.read_text()
        for node in ast.walk(ast.parse(src)):
            if not isinstance(node, ast.Compare):
                continue
            if not any(isinstance(op, ast.Eq | ast.NotEq | ast.In | ast.NotIn) for op in node.ops):
                continue
            operands = [node.left, *node.comparators]
            if any(isinstance(o, ast.Constant) and o.value in ("", None) for o in operands):
                continue  # "is it empty" checks reveal nothing
            membership = all(isinstance(op, ast.In | ast.NotIn) for op in node.ops)
            if membership and isinstance(node.left, ast.Constant):
                continue  # '"." in ticket' checks the public format, not the secret
            names = [
                ast.get_source_segment(src, o) or "" for o in operands if not isinstance(o, ast.Constant)
            ]
            if any(SECRETISH.search(n) for n in names):
                offenders.append(f"{path.name}:{node.lineno}: {ast.get_source_segment(src, node)}")
    assert not offenders, "compare secrets with hmac.compare_digest:\n" + "\n".join(offenders)
    # And the credential check itself is built on compare_digest.
    assert "hmac.compare_digest" in (RECEIVER_DIR / "security.py").read_text()


@pytest.fixture
def digest_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[bytes, bytes]]]:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(security.hmac, "compare_digest", spy)
    yield calls


def test_credential_checks_use_compare_digest_without_early_exit(
    digest_calls: list[tuple[bytes, bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    secrets_ = [security.new_webhook_secret() for _ in range(3)]
    future = datetime.now(UTC) + timedelta(hours=1)
    auth = ProductAuth(
        product_id="p", capture_token="phc_x",
        webhook_hashes=tuple(
            (security.hash_secret(s), future if i else None) for i, s in enumerate(secrets_)
        ),
        stream_hashes=(),
    )
    for presented, expected in ((secrets_[0], True), (secrets_[2], True), ("wrong", False), (None, False),
                                ("", False)):
        digest_calls.clear()
        assert auth.webhook_ok(presented) is expected
        # Every live hash is compared (no early exit on a match), each with a 32-byte digest.
        assert len(digest_calls) == 3, presented
        assert all(len(a) == len(b) == 32 for a, b in digest_calls)
    # No stream keys at all: still one comparison (against a dummy), still False.
    digest_calls.clear()
    assert auth.stream_ok(secrets_[0]) is False and len(digest_calls) == 1
    # The admin token check too.
    digest_calls.clear()
    assert security.equals("tok-1", "tok-1") and not security.equals("tok-2", "tok-1")
    assert len(digest_calls) == 2
    show(capsys, "security/constant-time", live_hashes=3, compare_digest_per_check=3,
         with_no_live_hash=1, digest_bytes=32)


def test_only_hashes_are_stored(receiver: Any, make_product: Callable[..., Any], database_url: str) -> None:
    p = make_product()
    rows = asyncio.run(asql(database_url, "SELECT * FROM credentials WHERE product_id = $1", p.product_id))
    dump = orjson.dumps([dict(r) for r in rows], default=str).decode()
    mcp_key = p.raw["mcp_key"]
    assert p.webhook_secret not in dump and p.stream_key not in dump and mcp_key not in dump
    assert {bytes(r["secret_sha256"]) for r in rows} == {
        security.hash_secret(p.webhook_secret), security.hash_secret(p.stream_key),
        security.hash_secret(mcp_key),
    }


# --------------------------------------------------------------------------- rotation


GRACE = 2.0


async def test_rotation_grace_window_at_both_ends(
    receiver: Any, make_product: Callable[..., Any], database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    nodelay(receiver)
    p = make_product()
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        issued = await products.rotate(
            conn, p.product_id, webhook_secret=True, stream_key=True, grace_seconds=GRACE
        )
        expires_at = await conn.fetchval(
            "SELECT max(expires_at) FROM credentials WHERE product_id = $1", p.product_id
        )
    finally:
        await conn.close()
    assert issued.webhook_secret and issued.stream_key
    expires = expires_at.timestamp()
    counter = iter(range(10_000))

    async def post(ac: httpx.AsyncClient, secret: str) -> tuple[float, float, int]:
        t0 = time.time()
        r = await ac.post(p.webhook_url, json=hog_event(p.product_id, next(counter)),
                          headers={"x-posthog-secret": secret})
        return t0, time.time(), r.status_code

    async def stream_status(ac: httpx.AsyncClient, key: str) -> tuple[float, float, int]:
        t0 = time.time()
        async with ac.stream("GET", p.stream_url, headers={"Authorization": f"Bearer {key}"}) as r:
            return t0, time.time(), r.status_code

    old_webhook: list[tuple[float, float, int]] = []
    old_stream: list[tuple[float, float, int]] = []
    async with httpx.AsyncClient(timeout=10) as ac:
        # The new credentials work as soon as the rotation is announced (NOTIFY → cache refresh).
        deadline = time.monotonic() + 5
        while (await post(ac, issued.webhook_secret))[2] != 200:
            assert time.monotonic() < deadline, "new secret never accepted"
            await asyncio.sleep(0.02)
        assert (await stream_status(ac, issued.stream_key))[2] == 200
        # The old ones: accepted until expires_at, rejected from then on. Poll across the boundary.
        deadline = time.monotonic() + GRACE + 5
        while time.monotonic() < deadline:
            if not old_webhook or old_webhook[-1][2] == 200:
                old_webhook.append(await post(ac, p.webhook_secret))
            if not old_stream or old_stream[-1][2] == 200:
                old_stream.append(await stream_status(ac, p.stream_key))
            if old_webhook[-1][2] != 200 and old_stream[-1][2] != 200:
                break
            await asyncio.sleep(0.05)
        # The last rejection may have been sent just before expires_at and answered after it.
        # Probe once more with requests that start strictly after it: an expired credential
        # stays expired (and the new secret keeps working).
        while time.time() <= expires:
            await asyncio.sleep(0.01)
        old_webhook.append(await post(ac, p.webhook_secret))
        old_stream.append(await stream_status(ac, p.stream_key))
        assert (await post(ac, issued.webhook_secret))[2] == 200

    for name, attempts in (("webhook", old_webhook), ("stream", old_stream)):
        inside = [a for a in attempts if a[1] < expires]
        after = [a for a in attempts if a[0] > expires]
        assert inside and all(s == 200 for *_, s in inside), (name, inside)
        assert after and all(s == 401 for *_, s in after), (name, after)
        # It worked until close to the end of the window, not only at its start.
        last_ok = max(a[1] for a in attempts if a[2] == 200)
        assert last_ok >= expires - 1.0, (name, expires - last_ok)
    def last_ok(attempts: list[tuple[float, float, int]]) -> float:
        return round(expires - max(a[1] for a in attempts if a[2] == 200), 3)

    def first_401(attempts: list[tuple[float, float, int]]) -> float:
        return round(min(a[1] for a in attempts if a[2] == 401) - expires, 3)

    show(
        capsys, "security/rotation", grace_seconds=GRACE,
        old_webhook_ok=sum(1 for a in old_webhook if a[2] == 200),
        old_webhook_last_ok_before_expiry_s=last_ok(old_webhook),
        old_webhook_first_401_after_expiry_s=first_401(old_webhook),
        old_stream_ok=sum(1 for a in old_stream if a[2] == 200),
        old_stream_last_ok_before_expiry_s=last_ok(old_stream),
        old_stream_first_401_after_expiry_s=first_401(old_stream),
    )


# --------------------------------------------------------------------------- failed-auth lockout


class CountingPool:
    """Wraps the runtime's pool to count acquisitions (a database round trip each)."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self.acquires = 0

    def acquire(self, *args: Any, **kwargs: Any) -> Any:
        self.acquires += 1
        return self._pool.acquire(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


def client_from(address: str, **kw: Any) -> httpx.Client:
    """A client whose connections come from another loopback address (a different client)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=10, **kw)


def test_failed_auth_lockout_per_client_and_product_and_cheap(
    receiver_factory: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    live = nodelay(receiver_factory(auth_fail_limit=3, auth_fail_window_seconds=30))
    a = register_product(live.base_url, new_product_id("la"))
    b = register_product(live.base_url, new_product_id("lb"))
    good = orjson.dumps({"event": "$pageview", "uuid": str(uuid.uuid4())})

    def post(c: httpx.Client, p: Any, secret: str | None) -> httpx.Response:
        headers = {"content-type": "application/json"}
        if secret is not None:
            headers["x-posthog-secret"] = secret
        return c.post(p.webhook_url, content=orjson.dumps({"event": "$pageview", "uuid": str(uuid.uuid4())}),
                      headers=headers)

    with client_from("127.0.0.1") as c1, client_from("127.0.0.2") as c2:
        first = [post(c1, a, "wrong-" + str(i)).status_code for i in range(3)]
        assert first == [401, 401, 401]
        locked = post(c1, a, "wrong-again")
        assert locked.status_code == 429 and locked.json()["detail"]
        retry_after = int(locked.headers["retry-after"])
        assert 1 <= retry_after <= 30
        # Locked before verification: even the right secret waits, and the stream too.
        assert post(c1, a, a.webhook_secret).status_code == 429
        s = c1.get(a.stream_url, headers={"Authorization": "Bearer nope"})
        assert s.status_code == 429 and "retry-after" in s.headers
        # Per product: the same client is not locked out of product B.
        assert post(c1, b, "wrong").status_code == 401
        assert post(c1, b, b.webhook_secret).status_code == 200
        # Per client: another address is not locked out of product A.
        assert post(c2, a, a.webhook_secret).status_code == 200
        assert post(c2, a, "wrong").status_code == 401

        # Cheap: once the product is cached, rejections (429, 401, unknown product 404) make
        # no database round trip at all. Count pool acquisitions while hammering. Unknown
        # product ids count toward the client's failed-auth limit too (across every name, so
        # a scan of made-up ids is locked out as well): the first lookup below is the first
        # failure, two more get 404, then 429.
        rt = live.runtime
        counting = CountingPool(rt.pool)
        saved = (rt.pool, rt.directory.pool, rt.hub.pool, rt.writer.pool)
        assert c1.post(f"{live.base_url}/webhook/nosuchproduct", content=good).status_code == 404
        rt.pool = rt.directory.pool = rt.hub.pool = rt.writer.pool = counting  # type: ignore[assignment]
        try:
            statuses: dict[int, int] = {}
            t0 = time.perf_counter()
            n = 0
            for i in range(60):
                for r in (
                    post(c1, a, "wrong"),  # locked: 429
                    c1.get(a.stream_url, headers={"Authorization": f"Bearer wrong{i}"}),  # 429
                    c1.post(f"{live.base_url}/webhook/nosuchproduct", content=good),  # 404, 429
                ):
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    n += 1
            per_request_ms = (time.perf_counter() - t0) / n * 1000
        finally:
            rt.pool, rt.directory.pool, rt.hub.pool, rt.writer.pool = saved
    assert statuses == {429: 178, 404: 2}, statuses
    show(
        capsys, "security/auth-lockout", limit=3, window_s=30, first_attempts=first,
        retry_after=retry_after, rejected=n, statuses=statuses, db_round_trips=counting.acquires,
        ms_per_rejection=f"{per_request_ms:.1f}",
    )
    assert counting.acquires == 0


def test_defaults_tolerate_a_few_mistyped_secrets(
    receiver: Any, make_product: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    nodelay(receiver)
    p = make_product()
    with httpx.Client(timeout=10) as c:
        wrong = [
            c.post(p.webhook_url, json={"event": "x"}, headers={"x-posthog-secret": f"typo{i}"}).status_code
            for i in range(5)
        ]
        right = c.post(p.webhook_url, json={"event": "x"}, headers={"x-posthog-secret": p.webhook_secret})
    assert wrong == [401] * 5 and right.status_code == 200
    show(capsys, "security/auth-defaults", mistyped=len(wrong), then=right.status_code)


# --------------------------------------------------------------------------- isolation


async def test_credentials_of_one_product_never_reach_another(
    receiver: Any, make_product: Callable[..., Any], database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    nodelay(receiver)
    a, b = make_product(), make_product()
    n = 15
    async with httpx.AsyncClient(timeout=10) as ac:

        async def post(target: Any, secret: str, body: dict[str, Any]) -> int:
            r = await ac.post(target.webhook_url, json=body, headers={"x-posthog-secret": secret})
            return r.status_code

        async def stream(target: Any, header: str) -> int:
            async with ac.stream("GET", target.stream_url, headers={"Authorization": header}) as r:
                if r.status_code != 200:
                    await r.aread()
                    assert r.json()["detail"]
                return r.status_code

        cross = [
            await post(b, a.webhook_secret, hog_event("xa", 0)),  # A's secret → B
            await post(a, b.webhook_secret, hog_event("xb", 0)),  # B's secret → A
            await post(a, a.stream_key, hog_event("xk", 0)),  # a stream key is not a webhook secret
            await stream(b, f"Bearer {a.stream_key}"),  # A's key → B's stream
            await stream(a, f"Bearer {b.stream_key}"),
            await stream(a, f"Bearer {a.webhook_secret}"),  # a webhook secret is not a stream key
            await stream(a, a.stream_key),  # no Bearer scheme
        ]
        assert cross == [401] * len(cross), cross
        ok = await asyncio.gather(
            *(post(a, a.webhook_secret, hog_event(a.product_id, i)) for i in range(n)),
            *(post(b, b.webhook_secret, hog_event(b.product_id, i)) for i in range(n)),
        )
        assert ok == [200] * (2 * n)
    sub_a = await collect_stream(a.stream_url, a.stream_key, until=n, since=0)
    sub_b = await collect_stream(b.stream_url, b.stream_key, until=n, since=0)
    users_a = {f["user_id"] for f in sub_a.frames.values()}
    users_b = {f["user_id"] for f in sub_b.frames.values()}
    assert users_a == {f"{a.product_id}-{i}" for i in range(n)}
    assert users_b == {f"{b.product_id}-{i}" for i in range(n)}
    assert {f["product_id"] for f in sub_a.frames.values()} == {a.product_id}
    rows = await asql(database_url, "SELECT product_id, count(*) AS n FROM events GROUP BY 1")
    assert {r["product_id"]: r["n"] for r in rows} == {a.product_id: n, b.product_id: n}
    show(capsys, "security/isolation", cross_attempts=len(cross), cross_statuses=sorted(set(cross)),
         a_streamed=len(sub_a.positions), b_streamed=len(sub_b.positions), leaked=0)


def test_unknown_tokens_and_products_count_toward_the_lockout(
    receiver_factory: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """Made-up capture tokens and product ids cost a database lookup each: a client guessing them
    is locked out like one guessing secrets (429), across every made-up name. Names known to
    exist are never refused for it, so a shared address (PostHog's) keeps its real products."""
    live = nodelay(receiver_factory(auth_fail_limit=3, auth_fail_window_seconds=30))
    p = register_product(live.base_url, new_product_id("known"))

    def capture(c: httpx.Client, token: str) -> int:
        body = orjson.dumps({"api_key": token, "batch": [{"event": "e", "uuid": str(uuid.uuid4())}]})
        return c.post(f"{live.base_url}/e/", content=body).status_code

    with client_from("127.0.0.1") as c1, client_from("127.0.0.3") as c3:
        assert capture(c1, p.capture_token) == 200  # a real product, seen before the scan
        scan = [capture(c1, "phc_" + uuid.uuid4().hex) for _ in range(5)]
        assert scan == [401, 401, 401, 429, 429], scan
        # Made-up product ids are the same scope: still locked out.
        r = c1.post(f"{live.base_url}/webhook/made-up-{uuid.uuid4().hex[:8]}", json={"event": "e"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        s = c1.get(f"{live.base_url}/stream/made-up-x", headers={"Authorization": "Bearer x"})
        assert s.status_code == 429
        # The known product still works for this client; another client is not locked out.
        assert capture(c1, p.capture_token) == 200
        assert c1.post(p.webhook_url, json={"event": "e"},
                       headers={"x-posthog-secret": p.webhook_secret}).status_code == 200
        ids = [c3.post(f"{live.base_url}/webhook/made-up-{i}", json={"event": "e"}).status_code
               for i in range(4)]
        assert ids == [404, 404, 404, 429], ids
    show(capsys, "security/unknown-names", tokens=scan, product_ids=ids)


def test_product_cache_evicts_one_entry_at_a_time(
    receiver: Any, make_product: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """When the cache is full, the least recently used entry goes, not the whole cache: a flood
    of made-up names used to clear it, so every real product's next request hit the database."""
    nodelay(receiver)
    p = make_product()
    directory = receiver.runtime.directory
    limit = getattr(directory, "max_entries", 10_000)

    def run(coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, receiver.loop).result(timeout=60)

    async def flood(n: int) -> int:
        hot_loads = 0
        for i in range(n):
            await directory.get(f"made-up-{i}")
            if p.product_id not in directory._entries:
                hot_loads += 1
            await directory.get(p.product_id)  # the real product stays in use
        return hot_loads

    run(directory.get(p.product_id))
    evictions_of_hot = run(flood(limit + 50))
    assert evictions_of_hot == 0
    assert len(directory._entries) <= limit + 1
    show(capsys, "security/product-cache", cache_limit=limit, made_up_lookups=limit + 50,
         real_product_evicted=evictions_of_hot)
