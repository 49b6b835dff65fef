"""Admin access fails closed (issue 14, findings 3 and 4).

Finding 3: an empty ``RECEIVER_ADMIN_TOKEN`` (docker compose's default) made admin stream
tickets forgeable, because their key was derived from the token; and ``ticket_ok`` accepted
any expiry in the future. Now an empty token means "no token", a short one stops the receiver
at start, and tickets are signed with a random key stored once in Postgres and shared by every
process and every receiver on the database.

Finding 4: loopback trust had no Host or Origin check, so a web page on the same machine could
take a product over by DNS rebinding, and a proxy that adds no X-Forwarded-For made everyone
local. Now a trusted local caller also needs a local Host, no foreign Origin and no cross-site
fetch, and the URLs in answers come from ``RECEIVER_PUBLIC_URL`` or a local Host only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from receiver.ops import admin
from receiver.settings import Settings
from tests.conftest import VENV_BIN, register_product
from tests.faults.kit import new_product_id, nodelay, show, sql

TOKEN = "adm-trust-" + "x" * 30


def stream_status(base: str, product_id: str, ticket: str) -> int:
    with httpx.stream("GET", f"{base}/admin/api/stream/{product_id}", params={"ticket": ticket},
                      timeout=10) as r:
        return r.status_code


def old_derived_ticket(token: str, product_id: str, expires: int) -> str:
    """A ticket signed the way it used to be: with a key derived from the token."""
    key = hashlib.sha256(b"receiver-admin-stream-ticket\0" + token.encode()).digest()
    mac = hmac.new(key, f"{product_id}\0{expires}".encode(), hashlib.sha256).hexdigest()
    return f"{expires}.{mac}"


# --------------------------------------------------------------------------- finding 3


def test_empty_token_is_unset_and_a_short_one_stops_the_receiver(database_url: str) -> None:
    assert Settings(admin_token="").admin_token is None
    assert Settings(admin_token="  ").admin_token is None
    res = subprocess.run(
        [str(VENV_BIN / "receiver"), "serve"], capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "RECEIVER_DATABASE_URL": database_url,
             "RECEIVER_ADMIN_TOKEN": "hunter2-short"},
        check=False,
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert "RECEIVER_ADMIN_TOKEN must be at least" in res.stderr
    assert "hunter2-short" not in res.stderr + res.stdout  # never echoed


def test_tickets_cannot_be_forged_with_the_empty_token(
    receiver_factory: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    # The compose default: RECEIVER_ADMIN_TOKEN set to "".
    live = nodelay(receiver_factory(admin_token=""))
    p = register_product(live.base_url, new_product_id("forge"))
    forged = old_derived_ticket("", p.product_id, int(time.time()) + 30)
    # From anywhere but a trusted local caller (here: through a proxy), a ticket forged with
    # the key an empty token used to give opens nothing.
    with httpx.stream("GET", f"{live.base_url}/admin/api/stream/{p.product_id}",
                      params={"ticket": forged}, headers={"X-Forwarded-For": "203.0.113.5"},
                      timeout=10) as r:
        assert r.status_code == 401
    # The real key is random, 32 bytes, and not derived from any token.
    key = live.runtime.ticket_key
    assert len(key) == 32 and key != hashlib.sha256(b"receiver-admin-stream-ticket\0").digest()
    show(capsys, "security/ticket-forgery", forged_with_empty_token=401)


def test_tickets_expire_within_minutes_even_if_they_say_otherwise(
    receiver_factory: Callable[..., Any]
) -> None:
    live = nodelay(receiver_factory(admin_token=TOKEN, admin_allow_loopback=False))
    p = _register(live.base_url)
    rt = live.runtime
    now = time.time()
    assert stream_status(live.base_url, p, admin.issue_ticket(rt, p)) == 200
    # Signed with the right key but claiming ten days (or an hour) of life: refused.
    for ahead in (10 * 86400, 3600, admin.TICKET_SECONDS + 60):
        long_lived = admin.issue_ticket(rt, p, now=now + ahead - admin.TICKET_SECONDS)
        assert stream_status(live.base_url, p, long_lived) == 401, ahead
    expired = admin.issue_ticket(rt, p, now=now - admin.TICKET_SECONDS - 1)
    assert stream_status(live.base_url, p, expired) == 401


def _register(base: str) -> str:
    pid = new_product_id("t")
    r = httpx.post(f"{base}/products", json={"product_id": pid, "contact_email": "o@example.com"},
                   headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert r.status_code == 201, r.text
    return pid


def test_a_ticket_verifies_on_every_receiver_and_worker_of_the_database(
    receiver_factory: Callable[..., Any], spawn_receiver: Callable[..., Any], database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    a = nodelay(receiver_factory(admin_token=TOKEN, admin_allow_loopback=False))
    b = nodelay(receiver_factory(admin_token=TOKEN, admin_allow_loopback=False))
    workers = spawn_receiver("--workers", "2", RECEIVER_ADMIN_TOKEN=TOKEN,
                             RECEIVER_ADMIN_ALLOW_LOOPBACK="false")
    try:
        pid = _register(a.base_url)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert a.runtime.ticket_key == b.runtime.ticket_key
        stored = sql(database_url, "SELECT secret FROM server_secrets WHERE name = 'admin_stream_ticket'")
        assert [bytes(r[0]) for r in stored] == [a.runtime.ticket_key]
        statuses = []
        for issuer, verifier in ((a, b), (b, a), (a, workers), (workers, b)):
            for _ in range(4):  # new connections: the two workers take turns
                t = httpx.post(f"{issuer.base_url}/admin/api/stream-ticket/{pid}", headers=auth,
                               timeout=10).json()["ticket"]
                statuses.append(stream_status(verifier.base_url, pid, t))
    finally:
        # SIGTERM: the supervisor stops its workers (the fixture's SIGKILL would orphan them).
        assert workers.terminate() == 0
    assert statuses == [200] * len(statuses)
    show(capsys, "security/ticket-shared-key", receivers=2, workers=2, verified=len(statuses))


# --------------------------------------------------------------------------- finding 4


def test_dns_rebinding_cannot_take_a_product_over(
    receiver: Any, make_product: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """A page on http://rebind.attacker.example:<port>, its name re-pointed at 127.0.0.1, sends
    loopback requests whose Host (and Origin) are the attacker's."""
    nodelay(receiver)
    p = make_product()
    port = receiver.settings.port
    base = receiver.base_url
    rebind = {"Host": f"rebind.attacker.example:{port}"}
    hostile_headers = [
        rebind,
        {**rebind, "Origin": f"http://rebind.attacker.example:{port}"},
        {"Origin": "https://evil.example"},  # a local Host, a foreign page (CSRF)
        {"Origin": "http://127.0.0.1:8050"},  # another local app: another origin
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ]
    seen = {}
    with httpx.Client(timeout=10) as c:
        for h in hostile_headers:
            listing = c.get(f"{base}/admin/api/products", headers=h)
            takeover = c.post(f"{base}/products", headers=h, json={
                "product_id": p.product_id, "contact_email": "evil@example.com",
                "force_reregister": True,
            })
            ticket = c.post(f"{base}/admin/api/stream-ticket/{p.product_id}", headers=h)
            seen[str(h)] = (listing.status_code, takeover.status_code, ticket.status_code)
            assert (listing.status_code, takeover.status_code, ticket.status_code) == (403, 403, 403), h
            assert "webhook_secret" not in takeover.text and "ticket" not in ticket.text
        # The product's credentials still work: nothing was rotated.
        r = c.post(p.webhook_url, json={"event": "$pageview"},
                   headers={"x-posthog-secret": p.webhook_secret})
        assert r.status_code == 200
        # The machine's owner still gets in: local Host names, the page's own origin.
        for h in ({"Host": f"localhost:{port}"}, {"Host": f"[::1]:{port}"},
                  {"Origin": base, "Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}):
            assert c.get(f"{base}/admin/api/products", headers=h).status_code == 200, h
    show(capsys, "security/rebinding", refused=len(hostile_headers), statuses=seen)


@contextlib.contextmanager
def tcp_forwarder(target_port: int) -> Iterator[int]:
    """A plain TCP relay on loopback, like socat, ssh -R or HAProxy in TCP mode: it adds no
    X-Forwarded-For, so every caller it relays reaches the receiver as a loopback peer."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}
    tasks: set[asyncio.Task[None]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            tasks.discard(task)

    async def main() -> None:
        stop = asyncio.get_running_loop().create_future()
        server = await asyncio.start_server(relay, "127.0.0.1", 0)
        holder.update(stop=stop, port=server.sockets[0].getsockname()[1])
        ready.set()
        await stop
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield holder["port"]
    finally:
        loop.call_soon_threadsafe(holder["stop"].set_result, None)
        thread.join(timeout=10)
        loop.close()


def test_a_proxy_without_forwarding_headers_is_not_trusted_for_its_callers(
    receiver: Any, make_product: Callable[..., Any]
) -> None:
    """Callers reach such a proxy by the public name: their Host is not a local one."""
    nodelay(receiver)
    make_product()
    with tcp_forwarder(receiver.settings.port) as port, httpx.Client(timeout=10) as c:
        public = {"Host": "receiver.example.com"}
        assert c.get(f"http://127.0.0.1:{port}/admin/api/products", headers=public).status_code == 403
        r = c.post(f"http://127.0.0.1:{port}/products", headers=public,
                   json={"product_id": new_product_id("px"), "contact_email": "a@b.example"})
        assert r.status_code == 403
        # A local caller through the same relay is still itself.
        assert c.get(f"http://127.0.0.1:{port}/admin/api/products").status_code == 200


def test_urls_in_answers_never_come_from_a_foreign_host(
    receiver_factory: Callable[..., Any]
) -> None:
    live = nodelay(receiver_factory(admin_token=TOKEN))
    port = live.settings.port
    with httpx.Client(timeout=10) as c:
        r = c.post(f"{live.base_url}/products",
                   headers={"Authorization": f"Bearer {TOKEN}", "Host": "evil.example",
                            "X-Forwarded-For": "203.0.113.9"},
                   json={"product_id": new_product_id("url"), "contact_email": "a@b.example"})
        assert r.status_code == 201, r.text
        urls = [r.json()[k] for k in ("webhook_url", "stream_url", "capture_url")]
        assert all(u.startswith(f"http://127.0.0.1:{port}/") for u in urls), urls
        r = c.post(f"{live.base_url}/products", headers={"Host": f"localhost:{port}"},
                   json={"product_id": new_product_id("url"), "contact_email": "a@b.example"})
        assert r.status_code == 201 and r.json()["webhook_url"].startswith(f"http://localhost:{port}/")
    pub = nodelay(receiver_factory(admin_token=TOKEN, public_url="https://rcv.example.com"))
    r = httpx.post(f"{pub.base_url}/products", headers={"Authorization": f"Bearer {TOKEN}",
                                                        "Host": "evil.example"},
                   json={"product_id": new_product_id("pub"), "contact_email": "a@b.example"},
                   timeout=10)
    assert r.status_code == 201 and r.json()["stream_url"].startswith("https://rcv.example.com/")


def test_static_file_names_with_nul_or_separators_are_404(receiver: Any) -> None:
    """``/admin/static/x%00.css`` answered 503 with a traceback in the log."""
    for bad in ("x%00.css", "%00", "a%2F..%2Fb.js", "app.js%00.css", "%2e%2e%2fadmin.py", "a%0a.js"):
        r = httpx.get(f"{receiver.base_url}/admin/static/{bad}", timeout=10)
        assert r.status_code == 404, (bad, r.status_code, r.text)
