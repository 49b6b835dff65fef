"""Graceful shutdown: SIGTERM to a real ``receiver serve`` process under load.

* In-flight batches are committed and acknowledged: every 200 is in the table, and nothing is
  in the table that its sender did not get a 200 for.
* New work is refused: every other answer is a 503 (with Retry-After) or a closed connection,
  never a 4xx; a keep-alive connection posting after the signal gets a 503 or is closed.
* Stream clients are closed cleanly: their chunked body ends with the terminating chunk (no
  reset, no truncated chunk) within a bound, so a client can tell "server went away on
  purpose" from a crash and reconnect.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import register_product
from tests.faults.kit import (
    LoadResult,
    await_for,
    event_uuid,
    hog_event,
    new_product_id,
    post_load,
    show,
    stored_uuids,
)

CONCURRENCY = 32
TOTAL = 6000  # an upper bound: the load stops when the process has exited
SIGTERM_AFTER_ACKS = 300
STREAM_CLOSE_BOUND = 5.0
EXIT_BOUND = 20.0
CONNECTION_ERRORS = {"ConnectError", "RemoteProtocolError", "ReadError", "WriteError"}


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_sigterm_drains_refuses_and_closes_streams_cleanly(
    spawn_receiver: Callable[..., Any], database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rp = spawn_receiver()
    product = register_product(rp.base_url, new_product_id("term"))
    run = product.product_id
    auth = {"Authorization": f"Bearer {product.stream_key}"}
    stream_url = f"{rp.base_url}/stream/{product.product_id}"
    stream_end: dict[str, tuple[str, float, int]] = {}
    opened: dict[str, bool] = {}

    async def subscriber(name: str, params: dict[str, str]) -> None:
        received = 0
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=60.0)) as c,
            c.stream("GET", stream_url, headers=auth, params=params) as r,
        ):
            assert r.status_code == 200
            opened[name] = True
            try:
                async for chunk in r.aiter_raw():
                    received += len(chunk)
                stream_end[name] = ("clean", time.monotonic(), received)
            except httpx.HTTPError as exc:
                stream_end[name] = (type(exc).__name__, time.monotonic(), received)

    streams = [
        asyncio.create_task(subscriber("live", {})),
        asyncio.create_task(subscriber("since", {"since": "0"})),
    ]
    await await_for(lambda: _true(len(opened) == 2), what="both streams open")

    # One keep-alive connection, used before and after the signal.
    keepalive = httpx.AsyncClient(
        timeout=httpx.Timeout(10.0), limits=httpx.Limits(max_connections=1, max_keepalive_connections=1)
    )
    headers = {"x-posthog-secret": product.webhook_secret, "content-type": "application/json"}
    first = await keepalive.post(product.webhook_url, content=orjson.dumps(hog_event(run, -1)),
                                 headers=headers)
    assert first.status_code == 200

    t_term: list[float] = []
    stop = asyncio.Event()

    def terminate_once(result: LoadResult) -> None:
        if len(result.acked) >= SIGTERM_AFTER_ACKS and not t_term:
            rp.proc.send_signal(signal.SIGTERM)
            t_term.append(time.monotonic())

    async def stop_when_exited() -> int | None:
        await await_for(lambda: _true(bool(t_term)), timeout=60, what="SIGTERM sent")
        code = await asyncio.to_thread(_wait, rp.proc, EXIT_BOUND)
        stop.set()
        return code

    async def after_signal_on_keepalive() -> str:
        await await_for(lambda: _true(bool(t_term)), timeout=60, what="SIGTERM sent")
        # Wait until the shutdown is visible (readyz 503, or the listener gone) ...
        await await_for(lambda: _shutting_down(rp.base_url), timeout=10, what="shutdown visible")
        # ... then post on the connection opened before the signal.
        try:
            r = await keepalive.post(product.webhook_url, content=orjson.dumps(hog_event(run, -2)),
                                     headers=headers)
        except httpx.HTTPError as exc:
            return type(exc).__name__
        assert r.status_code == 503, r.text
        assert r.headers.get("retry-after") == "1"
        return "503"

    exit_task = asyncio.create_task(stop_when_exited())
    keepalive_task = asyncio.create_task(after_signal_on_keepalive())
    load = await post_load(
        product.webhook_url, product.webhook_secret,
        ((i, hog_event(run, i)) for i in range(TOTAL)),
        concurrency=CONCURRENCY, on_ack=terminate_once, stop=stop,
    )
    exit_code = await exit_task
    keepalive_outcome = await keepalive_task
    await keepalive.aclose()
    await asyncio.wait_for(asyncio.gather(*streams), STREAM_CLOSE_BOUND + 5)

    assert t_term, "the load finished before SIGTERM"
    stored = await stored_uuids(database_url, product.product_id)
    acked_uuids = {event_uuid(run, i) for i in load.acked} | {event_uuid(run, -1)}
    missing = acked_uuids - stored.uuids
    committed_unacked = stored.uuids - acked_uuids
    refused = {str(k): v for k, v in load.statuses.items() if k != 200}
    stream_figures = {
        name: {"end": end, "after_sigterm_s": round(t - t_term[0], 2), "bytes": n}
        for name, (end, t, n) in stream_end.items()
    }
    show(
        capsys, "faults/sigterm",
        sent=load.sent, acked=len(load.acked), refused=refused, connection_errors=load.errors,
        stored=stored.rows, missing=len(missing), committed_but_unacked=len(committed_unacked),
        duplicated=stored.duplicated, keepalive_after_sigterm=keepalive_outcome,
        exit_code=exit_code, streams=stream_figures,
    )
    assert exit_code is not None, f"receiver did not exit within {EXIT_BOUND} s of SIGTERM"
    assert not load.bad, load.bad[:5]
    assert set(load.statuses) <= {200, 503}, load.statuses
    assert set(load.errors) <= CONNECTION_ERRORS, load.errors
    assert not missing and not committed_unacked
    assert stored.duplicated == 0 and stored.positions_gap_free
    assert keepalive_outcome in {"503"} | CONNECTION_ERRORS
    for name, (end, t, _n) in stream_end.items():
        assert end == "clean", (name, end)
        assert t - t_term[0] <= STREAM_CLOSE_BOUND, (name, t - t_term[0])


def _wait(proc: Any, timeout: float) -> int | None:
    try:
        return proc.wait(timeout=timeout)
    except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired: reported as None
        return None


async def _shutting_down(base_url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2.0) as c:
            r = await c.get(f"{base_url}/readyz")
    except httpx.HTTPError:
        return True
    return r.status_code == 503


async def _true(value: bool) -> bool:
    return value
