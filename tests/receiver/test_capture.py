"""The native capture API (``receiver.ingest.capture``) against a live receiver and real Postgres.

Every test posts over HTTP to a receiver served by uvicorn, then checks what matters to the
sender (status and exact body) and what matters downstream: rows in ``events`` (read with
asyncpg) and frames read by the stock ``autoplay_sdk.AsyncConnectorClient``. Waits are bounded
futures/events with timeouts, never sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import pytest
from autoplay_sdk import ActionsPayload, AsyncConnectorClient

from receiver.ingest import capture
from receiver.storage.store import asyncpg_dsn
from tests.conftest import LiveReceiver, Product, register_product

INVITE_CHAIN = (
    'span:nth-child="2"nth-of-type="1"text="Invite member";'
    'button.MuiButton-root:attr__class="MuiButton-root"attr__type="button"nth-child="1"'
    'nth-of-type="1"text="Invite member";div.toolbar:attr__id="team-page"attr_id="team-page"'
    'nth-child="2"nth-of-type="2";body:nth-child="2"nth-of-type="1"'
)
RECORDED = Path(__file__).resolve().parents[1] / "data" / "posthog_js_requests"
RECORDED_TOKEN = "phc_fixture_capture_token"
CAPTURE_BASES = ("/e", "/i/v0/e", "/batch", "/capture", "/track")
OK = {"status": 1}
ORIGIN = "http://app.example.test:3000"


# --------------------------------------------------------------------------- helpers


def event(
    name: str = "$pageview",
    *,
    token: str | None = None,
    uid: str | None = None,
    distinct_id: str = "user-jane",
    session: str = "sess-1",
    url: str = "http://app.example.test/team",
    timestamp: str | None = None,
    **props: Any,
) -> dict[str, Any]:
    """One event the way posthog-js 1.4xx builds it (token and distinct_id in properties)."""
    properties: dict[str, Any] = {
        "distinct_id": distinct_id,
        "$session_id": session,
        "$current_url": url,
        "email": "jane@example.com",
        **props,
    }
    if token is not None:
        properties["token"] = token
    out: dict[str, Any] = {
        "uuid": uid or str(uuid.uuid4()),
        "event": name,
        "properties": properties,
    }
    out["timestamp"] = timestamp or datetime.now(UTC).isoformat()
    return out


def click(token: str | None = None, **kw: Any) -> dict[str, Any]:
    return event(
        "$autocapture", token=token, **{"$event_type": "click", "$elements_chain": INVITE_CHAIN,
                                        "$el_text": "Invite member"}, **kw,
    )


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def post(
    base_url: str, path: str, body: bytes | str, *, params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    r = httpx.post(
        base_url + path, content=body, params=params, headers=headers or {}, timeout=10,
        follow_redirects=False,
    )
    assert not r.is_redirect, f"{path} answered {r.status_code} -> {r.headers.get('location')}"
    return r


async def fetch_rows(database_url: str, product_id: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    try:
        rows = await conn.fetch(
            "SELECT * FROM events WHERE product_id = $1 ORDER BY position", product_id
        )
    finally:
        await conn.close()
    return [dict(r) for r in rows]


def rows(database_url: str, product_id: str) -> list[dict[str, Any]]:
    return asyncio.run(fetch_rows(database_url, product_id))


def uuids(found: Sequence[dict[str, Any]]) -> list[str]:
    return [str(r["event_uuid"]) for r in found]


def b64_with_plus(make: Callable[[int], bytes]) -> tuple[bytes, bytes]:
    """A payload whose base64 contains '+', so form decoding has a '+' to lose and restore."""
    for n in range(500):
        payload = make(n)
        encoded = base64.b64encode(payload)
        if b"+" in encoded:
            return payload, encoded
    raise AssertionError("no payload variant produced a '+' in base64")


class Stream:
    """The stock AsyncConnectorClient on a product's live stream, collecting payloads."""

    def __init__(self, product: Product) -> None:
        self.payloads: list[ActionsPayload] = []
        self.changed = asyncio.Event()
        self.connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.client = AsyncConnectorClient(
            url=product.stream_url, token=product.stream_key, max_retries=3,
            on_connect=self._on_connect,
        )
        self.client.on_actions(self._on_actions)

    async def _on_connect(self) -> None:
        if not self.connected.done():
            self.connected.set_result(None)

    async def _on_actions(self, payload: ActionsPayload) -> None:
        self.payloads.append(payload)
        self.changed.set()

    async def wait_for(
        self, done: Callable[[list[ActionsPayload]], bool], timeout: float = 10.0
    ) -> list[ActionsPayload]:
        async with asyncio.timeout(timeout):
            while True:
                self.changed.clear()
                if done(self.payloads):
                    return self.payloads
                await self.changed.wait()

    def titles(self) -> list[str]:
        return [a.title for p in self.payloads for a in p.actions]


@asynccontextmanager
async def live_stream(product: Product) -> AsyncIterator[Stream]:
    stream = Stream(product)
    task = stream.client.run_in_background()
    try:
        # Live mode starts at the head when the headers go out; post only after that.
        await asyncio.wait_for(asyncio.shield(stream.connected), 10)
        yield stream
    finally:
        task.cancel()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)


async def apost(
    client: httpx.AsyncClient, path: str, body: bytes, **kw: Any
) -> httpx.Response:
    r = await client.post(path, content=body, **kw)
    assert not r.is_redirect
    return r


@pytest.fixture
def product(make_product: Callable[..., Product]) -> Product:
    return make_product()


# --------------------------------------------------------------------------- routes


def test_every_capture_route_with_and_without_slash_commits(
    receiver: LiveReceiver, product: Product, database_url: str
) -> None:
    sent: list[str] = []
    for base in CAPTURE_BASES:
        for path in (base + "/", base):
            ev = event(token=product.capture_token)
            r = post(receiver.base_url, path, dumps(ev), headers={"Content-Type": "application/json"})
            assert r.status_code == 200, (path, r.text)
            assert r.json() == OK
            sent.append(ev["uuid"])
    stored = rows(database_url, product.product_id)
    assert uuids(stored) == sent
    assert {r["source"] for r in stored} == {"capture"}


def test_legacy_get_with_data_parameter(
    receiver: LiveReceiver, product: Product, database_url: str
) -> None:
    ev = event(token=product.capture_token)
    data = base64.b64encode(dumps(ev)).decode()
    r = httpx.get(f"{receiver.base_url}/e/", params={"data": data, "ip": "1"}, timeout=10)
    assert r.status_code == 200 and r.json() == OK
    assert uuids(rows(database_url, product.product_id)) == [ev["uuid"]]
    assert httpx.get(f"{receiver.base_url}/e/", timeout=10).status_code == 400


# --------------------------------------------------------------------------- real posthog-js


async def _adopt_token(database_url: str, product_id: str, token: str) -> None:
    # The recordings carry a fixed token; give our product that token rather than rewrite the
    # recorded bytes, so they are replayed exactly as posthog-js sent them.
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await conn.execute(
            "UPDATE products SET capture_token = $2 WHERE product_id = $1", product_id, token
        )
    finally:
        await conn.close()


def test_recorded_posthog_js_requests_replay_byte_for_byte(
    receiver: LiveReceiver, product: Product, database_url: str
) -> None:
    index = json.loads((RECORDED / "index.json").read_text())
    assert len(index) >= 20, "recordings missing: see tests/data/posthog_js_requests/README.md"
    asyncio.run(_adopt_token(database_url, product.product_id, RECORDED_TOKEN))
    expected: list[str] = []
    captures: list[tuple[str, str, bytes, dict[str, str]]] = []
    forms: set[str] = set()
    for entry in index:
        meta = json.loads((RECORDED / f"{entry['name']}.json").read_text())
        body = (RECORDED / f"{entry['name']}.body").read_bytes()
        headers = {k: v for k, v in meta["headers"].items()
                   if k in ("content-type", "content-encoding", "origin")}
        path = meta["path"] + (f"?{meta['query']}" if meta["query"] else "")
        r = httpx.request(meta["method"], receiver.base_url + path, content=body or None,
                          headers=headers, timeout=10, follow_redirects=False)
        assert r.status_code == 200, (entry["name"], r.status_code, r.text)
        assert r.headers["access-control-allow-origin"] == meta["headers"]["origin"]
        if meta["path"] == "/e/":
            assert r.json() == OK, entry["name"]
            expected += meta["event_uuids"]
            captures.append((meta["method"], path, body, headers))
            forms.add(meta["body_form"])
        elif meta["path"].startswith("/array/"):
            assert r.json()["autocapture_opt_out"] is False
        else:
            assert meta["path"] == "/flags/" and r.json()["flags"] == {}
    # Every body form posthog-js 1.449 uses was exercised: gzip, plain JSON, base64 form.
    assert any(f.startswith("gzip") for f in forms) and any(f.startswith("form") for f in forms)
    assert any(f.startswith("object") for f in forms)

    stored = rows(database_url, product.product_id)
    assert sorted(uuids(stored)) == sorted(expected)
    assert {r["source"] for r in stored} == {"capture"}
    assert {r["distinct_id"] for r in stored} == {"user-fixture"}
    invites = [r for r in stored if r["element_text"] == "Invite member"]
    assert invites and all(r["title"] == "Click Invite member button" for r in invites)
    assert all(r["email"] == "fixture@example.com" for r in invites)

    # posthog-js retries with the same bytes: every replay is acknowledged, nothing is added.
    for method, path, body, headers in captures:
        r = httpx.request(method, receiver.base_url + path, content=body, headers=headers,
                          timeout=10)
        assert r.status_code == 200 and r.json() == OK
    assert len(rows(database_url, product.product_id)) == len(stored)


# --------------------------------------------------------------------------- body shapes


@pytest.mark.parametrize("shape", ["single", "array", "batch_api_key", "batch_token", "batch_sentAt"])
def test_body_shapes(
    shape: str, receiver: LiveReceiver, product: Product, database_url: str
) -> None:
    tok = product.capture_token
    if shape == "single":
        events = [event(token=tok)]
        body: Any = events[0]
    elif shape == "array":
        events = [event(token=tok), click(token=tok), event("signed_up", token=tok)]
        body = events
    elif shape == "batch_api_key":
        events = [event(), click(), event("signed_up")]
        body = {"api_key": tok, "batch": events, "sent_at": datetime.now(UTC).isoformat()}
    elif shape == "batch_token":
        events = [event(), click()]
        body = {"token": tok, "batch": events, "historical_migration": False}
    else:  # posthog-python's camelCase sentAt
        events = [event(), click()]
        body = {"api_key": tok, "batch": events, "sentAt": datetime.now(UTC).isoformat()}
    r = post(receiver.base_url, "/batch/", dumps(body), headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json() == OK
    stored = rows(database_url, product.product_id)
    assert uuids(stored) == [e["uuid"] for e in events]
    assert all(r["distinct_id"] == "user-jane" and r["session_id"] == "sess-1" for r in stored)
    # Each event gets its own receive time (the frame's forwarded_at, unique per session).
    assert len({r["received_at"] for r in stored}) == len(stored)


def test_distinct_id_top_level_and_dollar_forms(
    receiver: LiveReceiver, product: Product, database_url: str
) -> None:
    a = {"event": "e1", "distinct_id": 42, "uuid": str(uuid.uuid4()), "properties": {}}
    b = {"event": "e2", "$distinct_id": "dollar", "uuid": str(uuid.uuid4())}
    r = post(receiver.base_url, "/batch", dumps({"api_key": product.capture_token, "batch": [a, b]}))
    assert r.status_code == 200, r.text
    assert [x["distinct_id"] for x in rows(database_url, product.product_id)] == ["42", "dollar"]


def test_click_is_normalized_like_a_webhook_event(
    receiver: LiveReceiver, product: Product, database_url: str
) -> None:
    ev = click(token=product.capture_token)
    assert post(receiver.base_url, "/e/", dumps([ev])).status_code == 200
    [row] = rows(database_url, product.product_id)
    assert row["source"] == "capture"
    assert row["action_type"] == "click"
    assert row["element_tag"] == "span"
    assert row["element_text"] == "Invite member"
    assert row["email"] == "jane@example.com"
    assert row["title"] == "Click Invite member button"
    assert row["payload"]["uuid"] == ev["uuid"]  # the raw event, as posted


# --------------------------------------------------------------------------- encodings


def _batch(product: Product, n: int = 2) -> tuple[bytes, list[str]]:
    events = [click() for _ in range(n)]
    body = {"api_key": product.capture_token, "batch": events,
            "sent_at": datetime.now(UTC).isoformat()}
    return dumps(body), [e["uuid"] for e in events]


@pytest.mark.parametrize(
    "how",
    [
        "gzip_query_gzip_js",
        "gzip_query_gzip",
        "gzip_content_encoding",
        "gzip_magic_bytes_only",
        "base64_strict_body",
        "base64_query_param",
        "plain_json_text_plain",
    ],
)
def test_encodings(how: str, receiver: LiveReceiver, product: Product, database_url: str) -> None:
    body, sent = _batch(product)
    params: dict[str, str] = {"ver": "1.449.2", "_": "1732443333000"}
    headers = {"Content-Type": "text/plain"}
    if how == "gzip_query_gzip_js":
        payload = gzip.compress(body)
        params["compression"] = "gzip-js"
    elif how == "gzip_query_gzip":
        payload = gzip.compress(body)
        params["compression"] = "gzip"
    elif how == "gzip_content_encoding":  # posthog-node / posthog-python
        payload = gzip.compress(body)
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    elif how == "gzip_magic_bytes_only":  # current posthog-js: no parameter, text/plain
        payload = gzip.compress(body, mtime=0)
    elif how == "base64_strict_body":
        payload = base64.b64encode(body)
    elif how == "base64_query_param":
        payload = base64.b64encode(body)
        params["compression"] = "base64"
    else:
        payload = body
    r = post(receiver.base_url, "/e/", payload, params=params, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json() == OK
    assert uuids(rows(database_url, product.product_id)) == sent


@pytest.mark.parametrize("plus", ["raw_plus", "percent_encoded"])
def test_send_beacon_form_data_base64(
    plus: str, receiver: LiveReceiver, product: Product, database_url: str
) -> None:
    def make(n: int) -> bytes:
        ev = click(token=product.capture_token, pad=">" * n, note="€ ü")
        # Like JSON.stringify: UTF-8, not \u escapes (base64 of UTF-8 is what posthog-js sends).
        return json.dumps([ev], ensure_ascii=False).encode()

    payload, encoded = b64_with_plus(make)
    sent = [e["uuid"] for e in json.loads(payload)]
    # encodeURIComponent (posthog-js) sends %2B; other clients send a bare '+', which form
    # decoding turns into a space that the receiver must turn back.
    value = encoded.decode() if plus == "raw_plus" else quote(encoded.decode(), safe="")
    assert ("+" in value) == (plus == "raw_plus")
    r = post(
        receiver.base_url, "/e/", f"data={value}", params={"compression": "base64"},
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200, r.text
    assert r.json() == OK
    stored = rows(database_url, product.product_id)
    assert uuids(stored) == sent
    assert stored[0]["payload"]["properties"]["note"] == "€ ü"


def test_form_without_compression_param_still_decodes_base64(
    receiver: LiveReceiver, product: Product, database_url: str
) -> None:
    payload, encoded = b64_with_plus(lambda n: dumps(event(token=product.capture_token, pad=">" * n)))
    r = post(
        receiver.base_url, "/capture/", b"data=" + encoded,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200, r.text
    assert uuids(rows(database_url, product.product_id)) == [json.loads(payload)["uuid"]]


def test_form_without_data_field_is_400(receiver: LiveReceiver) -> None:
    r = post(receiver.base_url, "/e/", "foo=bar",
             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400 and "data" in r.json()["detail"]


@pytest.mark.parametrize(
    ("payload", "params", "needle"),
    [
        (b"\x1f\x8b\x08\x00garbage-not-deflate", {}, "gzip"),
        (gzip.compress(b'[{"event": "x"}]')[:-12], {}, "gzip"),  # truncated
        (b'[{"event": "x"}]', {"compression": "gzip-js"}, "gzip"),  # says gzip, is not
        (b"N4IgLg9g==", {"compression": "lz64"}, "lz64"),
        (b"{not json", {}, "JSON"),
        (b"", {}, "empty"),
    ],
    ids=["corrupt-gzip", "truncated-gzip", "not-gzip", "lz64", "bad-json", "empty"],
)
def test_undecodable_bodies_are_400(
    payload: bytes, params: dict[str, str], needle: str, receiver: LiveReceiver,
    product: Product, database_url: str,
) -> None:
    r = post(receiver.base_url, "/e/", payload, params=params, headers={"Content-Type": "text/plain"})
    assert r.status_code == 400, r.text
    assert needle.lower() in r.json()["detail"].lower()
    assert rows(database_url, product.product_id) == []


def test_unsupported_content_encoding_is_415(receiver: LiveReceiver, product: Product) -> None:
    body, _ = _batch(product)
    r = post(receiver.base_url, "/e/", body, headers={"Content-Encoding": "br"})
    assert r.status_code == 415, r.text


# --------------------------------------------------------------------------- sizes


def test_body_too_large_is_413(receiver_factory: Callable[..., LiveReceiver], database_url: str) -> None:
    live = receiver_factory(max_body_bytes=4096)
    prod = register_product(live.base_url, "big")
    big = dumps([event(token=prod.capture_token, pad="z" * 8000)])
    r = post(live.base_url, "/e/", big)
    assert r.status_code == 413, r.text
    assert "4096" in r.json()["detail"]

    # No Content-Length (chunked): the cap holds while streaming too.
    def chunks() -> Any:
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    r = httpx.post(f"{live.base_url}/batch/", content=chunks(), timeout=10)
    assert r.status_code == 413, r.text
    assert rows(database_url, "big") == []


def test_gzip_bomb_is_413_at_the_decompressed_cap(
    receiver_factory: Callable[..., LiveReceiver], database_url: str
) -> None:
    live = receiver_factory(max_decompressed_bytes=64 * 1024)
    prod = register_product(live.base_url, "bomb")
    # A valid JSON array padded with whitespace: 4 MB inflated from a few KB on the wire.
    inner = dumps([event(token=prod.capture_token)])
    bomb = gzip.compress(inner[:-1] + b" " * (4 * 1024 * 1024) + b"]")
    assert len(bomb) < 16 * 1024
    for how in ({"Content-Type": "text/plain"}, {"Content-Encoding": "gzip"}):
        r = post(live.base_url, "/e/", bomb, headers=how)
        assert r.status_code == 413, r.text
        assert str(64 * 1024) in r.json()["detail"]
    # The same event under the cap goes through.
    r = post(live.base_url, "/e/", gzip.compress(inner))
    assert r.status_code == 200 and r.json() == OK
    assert len(rows(database_url, "bomb")) == 1


# --------------------------------------------------------------------------- tokens


def test_unknown_token_is_401(receiver: LiveReceiver, product: Product, database_url: str) -> None:
    for tok in ("phc_" + "0" * 32, "not a token <script>"):
        r = post(receiver.base_url, "/e/", dumps([event(token=tok)]))
        assert r.status_code == 401, r.text
        assert "unknown capture token" in r.json()["detail"]
    assert rows(database_url, product.product_id) == []


def test_personal_api_key_is_401_with_a_clear_detail(
    receiver: LiveReceiver, product: Product, database_url: str
) -> None:
    body = {"api_key": "phx_abcdefabcdefabcdef", "batch": [event()]}
    r = post(receiver.base_url, "/batch/", dumps(body))
    assert r.status_code == 401
    detail = r.json()["detail"]
    assert "phx_" in detail and "capture_token" in detail
    assert rows(database_url, product.product_id) == []


def test_missing_token_is_401(receiver: LiveReceiver) -> None:
    r = post(receiver.base_url, "/e/", dumps([event()]))
    assert r.status_code == 401 and "token" in r.json()["detail"]


def test_mixed_tokens_are_400(
    receiver: LiveReceiver, make_product: Callable[..., Product], database_url: str
) -> None:
    a, b = make_product(), make_product()
    r = post(receiver.base_url, "/e/", dumps([event(token=a.capture_token), event(token=b.capture_token)]))
    assert r.status_code == 400 and "same token" in r.json()["detail"]
    body = {"api_key": a.capture_token, "batch": [event(token=b.capture_token)]}
    assert post(receiver.base_url, "/batch/", dumps(body)).status_code == 400
    assert rows(database_url, a.product_id) == [] and rows(database_url, b.product_id) == []


def test_token_from_event_level_keys(
    receiver: LiveReceiver, product: Product, database_url: str
) -> None:
    sent = []
    for where in ("token", "$token", "api_key"):
        ev = event()
        ev[where] = product.capture_token
        assert post(receiver.base_url, "/e", dumps(ev)).status_code == 200, where
        sent.append(ev["uuid"])
    assert uuids(rows(database_url, product.product_id)) == sent


def test_tokens_route_to_their_own_product(
    receiver: LiveReceiver, make_product: Callable[..., Product], database_url: str
) -> None:
    a, b = make_product(), make_product()
    ea, eb = event(token=a.capture_token), event(token=b.capture_token)
    assert post(receiver.base_url, "/e/", dumps(ea)).status_code == 200
    assert post(receiver.base_url, "/e/", dumps(eb)).status_code == 200
    assert uuids(rows(database_url, a.product_id)) == [ea["uuid"]]
    assert uuids(rows(database_url, b.product_id)) == [eb["uuid"]]


# --------------------------------------------------------------------------- invalid events


def test_malformed_event_rejects_the_whole_request_naming_its_index(
    receiver: LiveReceiver, product: Product, database_url: str
) -> None:
    good = event()
    nameless = {"uuid": str(uuid.uuid4()), "properties": {"distinct_id": "x"}}
    body = {"api_key": product.capture_token, "batch": [good, nameless]}
    r = post(receiver.base_url, "/batch/", dumps(body))
    assert r.status_code == 400
    assert r.json()["detail"].startswith("event 1:") and "'event'" in r.json()["detail"]
    body = {"api_key": product.capture_token, "batch": [good, "not an object"]}
    r = post(receiver.base_url, "/batch/", dumps(body))
    assert r.status_code == 400 and r.json()["detail"].startswith("event 1:")
    for bad in ({"api_key": product.capture_token, "batch": []},
                {"api_key": product.capture_token, "batch": {"event": "x"}}, 42):
        assert post(receiver.base_url, "/batch/", dumps(bad)).status_code == 400
    # Nothing from a rejected request was committed.
    assert rows(database_url, product.product_id) == []


def test_rate_limit_applies_to_capture_like_webhooks(
    receiver_factory: Callable[..., LiveReceiver], database_url: str
) -> None:
    live = receiver_factory(ingest_rate_limit=0.01, ingest_burst=2)
    prod = register_product(live.base_url, "limited")
    body = {"api_key": prod.capture_token, "batch": [event(), event(), event()]}
    r = post(live.base_url, "/batch/", dumps(body))
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert rows(database_url, "limited") == []
    body = {"api_key": prod.capture_token, "batch": [event(), event()]}
    assert post(live.base_url, "/batch/", dumps(body)).status_code == 200


# --------------------------------------------------------------------------- timestamps


def _iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def test_timestamp_resolution(receiver: LiveReceiver, product: Product, database_url: str) -> None:
    fixed = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
    skewed_now = datetime(2001, 1, 1, tzinfo=UTC)  # a client whose clock is decades off
    with_offset = event(name="offset")
    del with_offset["timestamp"]
    with_offset["offset"] = 60_000
    skewed = event(name="skewed", timestamp=_iso(skewed_now - timedelta(seconds=5)))
    ignored = event(name="ignored", timestamp=_iso(fixed), **{"$ignore_sent_at": True})
    future = event(name="future", timestamp=_iso(datetime.now(UTC) + timedelta(hours=48)))
    body = {"api_key": product.capture_token, "sent_at": _iso(skewed_now),
            "batch": [with_offset, skewed, ignored, future]}
    assert post(receiver.base_url, "/batch/", dumps(body)).status_code == 200
    by_name = {r["event"]: r for r in rows(database_url, product.product_id)}

    def lag(name: str) -> float:
        r = by_name[name]
        return (r["received_at"] - r["occurred_at"]).total_seconds()

    assert 60 <= lag("offset") < 65
    assert 5 <= lag("skewed") < 10
    assert by_name["ignored"]["occurred_at"] == fixed
    assert 0 <= lag("future") < 5


def test_sent_at_from_query_in_ms(receiver: LiveReceiver, product: Product, database_url: str) -> None:
    client_now = datetime(2001, 1, 1, tzinfo=UTC)
    ev = event(timestamp=_iso(client_now - timedelta(seconds=30)), token=product.capture_token)
    params = {"sent_at": str(int(client_now.timestamp() * 1000))}
    assert post(receiver.base_url, "/e/", dumps([ev]), params=params).status_code == 200
    [row] = rows(database_url, product.product_id)
    assert 30 <= (row["received_at"] - row["occurred_at"]).total_seconds() < 35


def test_resolve_timestamp_rules() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    sent = datetime(2000, 6, 1, tzinfo=UTC)
    r = capture.resolve_timestamp
    assert r({"offset": 1500}, now=now, sent_at=None) == now - timedelta(milliseconds=1500)
    assert r({"offset": 10, "timestamp": "2020-01-01T00:00:00Z"}, now=now, sent_at=sent) == (
        now - timedelta(milliseconds=10)
    )
    assert r({"timestamp": "2000-06-01T00:00:00Z"}, now=now, sent_at=sent) == now
    assert r({"timestamp": "2020-01-01T00:00:00Z"}, now=now, sent_at=None) == datetime(
        2020, 1, 1, tzinfo=UTC
    )
    assert r({}, now=now, sent_at=sent) == now
    assert r({"timestamp": "not a time"}, now=now, sent_at=None) == now
    assert r({"offset": -(10**30)}, now=now, sent_at=None) == now  # overflow → now
    assert r({"timestamp": "2026-01-02T00:00:00Z"}, now=now, sent_at=None) == now  # > 23 h ahead
    assert r({"timestamp": "2026-01-01T22:00:00Z"}, now=now, sent_at=None) == datetime(
        2026, 1, 1, 22, tzinfo=UTC
    )


# --------------------------------------------------------------------------- stream and dedup


async def test_captured_events_reach_the_stock_sdk_client(
    receiver: LiveReceiver, product: Product, database_url: str
) -> None:
    pageview = event(token=product.capture_token, session="s-stream", distinct_id="jane@acme")
    clicked = click(token=product.capture_token, session="s-stream", distinct_id="jane@acme")
    internal = event("$identify", token=product.capture_token, session="s-stream")
    body = {"api_key": product.capture_token, "batch": [pageview, clicked, internal],
            "sent_at": datetime.now(UTC).isoformat()}
    async with live_stream(product) as stream, httpx.AsyncClient(
        base_url=receiver.base_url, timeout=10
    ) as http:
        # posthog-js 1.4xx: gzip, text/plain, no compression parameter.
        r = await apost(http, "/e/", gzip.compress(dumps(body)), headers={"Content-Type": "text/plain"})
        assert r.status_code == 200 and r.json() == OK
        await stream.wait_for(lambda p: len(p) >= 2)
    actions = [a for p in stream.payloads for a in p.actions]
    assert sorted(a.title for a in actions) == ["Click Invite member button", "Page Load: Team"]
    for p in stream.payloads:
        assert (p.product_id, p.user_id, p.session_id, p.email) == (
            product.product_id, "jane@acme", "s-stream", "jane@example.com"
        )
    assert {a.raw_url for a in actions} == {"http://app.example.test/team"}
    stored = await fetch_rows(database_url, product.product_id)
    assert [r["event"] for r in stored] == ["$pageview", "$autocapture", "$identify"]
    assert {r["source"] for r in stored} == {"capture"}


async def test_duplicates_make_one_row_and_one_frame(
    receiver: LiveReceiver, product: Product, database_url: str
) -> None:
    dup = click(token=product.capture_token, session="s-dup")
    sentinel = event("$pageview", token=product.capture_token, session="s-dup")
    async with live_stream(product) as stream, httpx.AsyncClient(
        base_url=receiver.base_url, timeout=10
    ) as http:
        # posthog-js retries with the same uuid; a retry may also repeat it within a batch.
        for body in ([dup], [dup], {"api_key": product.capture_token, "batch": [dup, dup]}):
            r = await apost(http, "/e/", dumps(body))
            assert r.status_code == 200 and r.json() == OK
        r = await apost(http, "/e/", dumps([sentinel]))
        assert r.status_code == 200
        # Frames arrive in position order, so once the sentinel is here any duplicate frame
        # would already have arrived too.
        await stream.wait_for(lambda p: "Page Load: Team" in [a.title for x in p for a in x.actions])
    assert sorted(stream.titles()) == ["Click Invite member button", "Page Load: Team"]
    stored = await fetch_rows(database_url, product.product_id)
    assert uuids(stored) == [dup["uuid"], sentinel["uuid"]]


async def test_capture_and_webhook_share_dedup(
    receiver: LiveReceiver, product: Product, database_url: str
) -> None:
    ev = click(token=product.capture_token)
    async with httpx.AsyncClient(base_url=receiver.base_url, timeout=10) as http:
        assert (await apost(http, "/e/", dumps(ev))).status_code == 200
        # The same event arriving through the PostHog destination too: one row.
        r = await http.post(
            f"/webhook/{product.product_id}",
            json={"uuid": ev["uuid"], "event": "$autocapture", "distinct_id": "user-jane"},
            headers={"x-posthog-secret": product.webhook_secret},
        )
        assert r.status_code == 200 and r.json()["duplicate"] is True
    assert uuids(await fetch_rows(database_url, product.product_id)) == [ev["uuid"]]


# --------------------------------------------------------------------------- CORS


def test_cors_on_capture_flags_and_config_routes(receiver: LiveReceiver, product: Product) -> None:
    base = receiver.base_url
    paths = [p for b in (*CAPTURE_BASES, "/flags", "/decide") for p in (b + "/", b)]
    paths += [f"/array/{product.capture_token}/config", f"/array/{product.capture_token}/config.js"]
    for path in paths:
        r = httpx.options(base + path, headers={
            "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        }, timeout=10)
        assert r.status_code == 204, (path, r.status_code)
        assert r.headers["access-control-allow-origin"] == ORIGIN
        assert "POST" in r.headers["access-control-allow-methods"]
        assert "GET" in r.headers["access-control-allow-methods"]
        assert r.headers["access-control-allow-headers"].lower() == "content-type"
        assert "access-control-allow-credentials" not in r.headers

    ok = post(base, "/e/", dumps([event(token=product.capture_token)]), headers={"Origin": ORIGIN})
    # Errors too: a browser hides a 401 without CORS headers, and posthog-js would retry it.
    bad = post(base, "/e/", dumps([event(token="phc_nope")]), headers={"Origin": ORIGIN})
    flags = httpx.post(f"{base}/flags/?v=2", json={"token": "x"}, headers={"Origin": ORIGIN})
    config = httpx.get(f"{base}/array/{product.capture_token}/config", headers={"Origin": ORIGIN})
    for r, status in ((ok, 200), (bad, 401), (flags, 200), (config, 200)):
        assert r.status_code == status
        assert r.headers["access-control-allow-origin"] == ORIGIN
        assert "origin" in r.headers["vary"].lower()
        assert "access-control-allow-credentials" not in r.headers


def test_no_cors_on_other_routes(receiver: LiveReceiver, product: Product) -> None:
    base = receiver.base_url
    h = {"Origin": ORIGIN}
    responses = [
        httpx.post(product.webhook_url, json={"event": "$pageview", "distinct_id": "u"},
                   headers={**h, "x-posthog-secret": product.webhook_secret}),
        httpx.post(product.webhook_url, json={"event": "x"}, headers={**h, "x-posthog-secret": "no"}),
        httpx.get(product.stream_url, headers=h),  # 401 without the key
        httpx.get(f"{base}/healthz", headers=h),
        httpx.post(f"{base}/products", json={"product_id": "other", "contact_email": "a@b.co"},
                   headers=h),
        httpx.options(product.webhook_url, headers={**h, "Access-Control-Request-Method": "POST"}),
        httpx.options(product.stream_url, headers={**h, "Access-Control-Request-Method": "GET"}),
    ]
    # /products with a foreign Origin is a web page, not the machine's owner: 403 (issue 14).
    assert [r.status_code for r in responses][:5] == [200, 401, 401, 200, 403]
    for r in responses:
        assert not any(k.startswith("access-control-") for k in r.headers), (r.url, r.headers)
    # A live stream (200) has none either.
    with httpx.stream("GET", product.stream_url, timeout=10, headers={
        **h, "Authorization": f"Bearer {product.stream_key}",
    }) as r:
        assert r.status_code == 200
        assert not any(k.startswith("access-control-") for k in r.headers)


# --------------------------------------------------------------------------- flags and config


def test_flags_answer(receiver: LiveReceiver) -> None:
    for path in ("/flags/?v=2", "/flags", "/decide/?v=3", "/decide"):
        for method in ("GET", "POST"):
            r = httpx.request(method, receiver.base_url + path, timeout=10, follow_redirects=False,
                              json={"token": "phc_x", "distinct_id": "u"})
            assert r.status_code == 200, (method, path, r.text)
            body = r.json()
            assert body["featureFlags"] == {} and body["featureFlagPayloads"] == {}
            assert body["flags"] == {} and body["errorsWhileComputingFlags"] is False
            assert body["autocapture_opt_out"] is False
            assert body["sessionRecording"] is False
            assert body["supportedCompression"] == ["gzip", "gzip-js"]


def test_remote_config_is_the_same_for_known_and_unknown_tokens(
    receiver: LiveReceiver, product: Product
) -> None:
    known = httpx.get(f"{receiver.base_url}/array/{product.capture_token}/config", timeout=10)
    unknown = httpx.get(f"{receiver.base_url}/array/phc_unknown/config", timeout=10)
    assert known.status_code == unknown.status_code == 200
    k, u = known.json(), unknown.json()
    assert k["token"] == product.capture_token and u["token"] == "phc_unknown"
    assert {**k, "token": None} == {**u, "token": None}
    expected = {
        "autocapture_opt_out": False, "supportedCompression": ["gzip", "gzip-js"],
        "hasFeatureFlags": False, "sessionRecording": False, "heatmaps": False, "surveys": False,
        "defaultIdentifiedOnly": True, "captureDeadClicks": False, "capturePerformance": False,
    }
    assert {key: k[key] for key in expected} == expected
    # Something that cannot be a token is refused (config.js embeds the token in JavaScript).
    assert httpx.get(f"{receiver.base_url}/array/a%3Cb%3E/config", timeout=10).status_code == 400


def test_remote_config_js(receiver: LiveReceiver, product: Product) -> None:
    tok = product.capture_token
    r = httpx.get(f"{receiver.base_url}/array/{tok}/config.js", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/javascript")
    text = r.text
    assert text.startswith("window._POSTHOG_REMOTE_CONFIG = window._POSTHOG_REMOTE_CONFIG || {};")
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed; the JSON config is covered by another test")
    script = (
        "const window = {};\n" + text
        + "\nprocess.stdout.write(JSON.stringify(window._POSTHOG_REMOTE_CONFIG));"
    )
    out = subprocess.run([node, "-e", script], capture_output=True, timeout=30, check=True)
    loaded = json.loads(out.stdout)
    assert list(loaded) == [tok]
    assert loaded[tok]["siteApps"] == []
    assert loaded[tok]["config"] == capture.remote_config(tok)
    assert loaded[tok]["config"]["autocapture_opt_out"] is False
