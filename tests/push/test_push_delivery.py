"""Push delivery against a real endpoint (a loopback HTTP server), a real receiver and Postgres:
what is sent, in which order, how failures are retried or dead-lettered, and how the operator
sees and redelivers them."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import httpx
import pytest
import time_machine
from standardwebhooks import Webhook, WebhookVerificationError

from tests.conftest import LiveReceiver, register_product
from tests.faults.kit import new_product_id, show, sql, wait_for
from tests.push.endpoint import Received, serve_endpoint
from tests.push.helpers import (
    FAST,
    SECRET,
    assert_signed,
    cli_json,
    dead_positions,
    endpoint_row,
    positions_of,
    post_events,
    push_product,
    receiver_cli,
    stream_bodies,
)


@pytest.fixture
def fast_receiver(receiver_factory: Callable[..., LiveReceiver]) -> LiveReceiver:
    return receiver_factory(**FAST)


def test_every_payload_is_the_stream_frame_signed_and_in_order(
    fast_receiver: LiveReceiver, database_url: str
) -> None:
    with serve_endpoint() as ep:
        product = push_product(fast_receiver.base_url, ep.url, new_product_id("push"))
        assert product.raw["push"] == {"url": ep.url}  # our secret: not echoed back
        run = product.product_id
        positions = post_events(product, run, range(0, 12))
        # An $identify is stored but never streamed: it is not pushed either.
        internal = post_events(product, run, range(12, 13), event="$identify")
        positions += post_events(product, run, range(13, 25))
        ep.wait_for(lambda reqs: len(reqs) >= 24 and reqs, what="24 pushes")
        # The cursor past the last one: everything up to it, the $identify included, is settled
        # (a push of the $identify would have happened before). Then nothing more can come.
        wait_for(lambda: endpoint_row(database_url, run)["cursor"] >= positions[-1],
                 what="the durable cursor at the last position")
        got = ep.snapshot()

    # Each event once (the window may reorder sessions between them, never within one).
    assert sorted(positions_of(got)) == positions and internal[0] not in positions_of(got)
    assert {r.webhook_id for r in got} == {f"{run}:{p}" for p in positions}
    assert_signed(got)
    first = min(got, key=lambda r: r.position)
    assert first.method == "POST" and first.path == "/hook"
    assert first.headers["content-type"] == "application/json"
    assert first.headers["authorization"] == f"Bearer {SECRET}"
    assert abs(int(first.headers["webhook-timestamp"]) - time.time()) < 60
    # The body is the stream's frame, byte for byte.
    frames = stream_bodies(product, 0, len(positions))
    assert {r.position: r.body for r in got} == frames
    payload = first.json()
    assert payload["type"] == "actions" and payload["count"] == len(payload["actions"]) == 1
    assert payload["product_id"] == run and payload["position"] == positions[0]
    # Sessions: in order within each (the stock SDK merges per session).
    by_session: dict[str, list[int]] = {}
    for r in got:
        by_session.setdefault(r.json()["session_id"], []).append(r.json()["actions"][0]["index"])
    assert all(v == sorted(v) for v in by_session.values()) and len(by_session) > 1

    row = endpoint_row(database_url, run)
    assert row["cursor"] == internal[0] + 12 and row["delivered_total"] == 24
    # The secret is in push_endpoints only: not in the product's stored configuration.
    config = sql(database_url, "SELECT integration_config::text FROM products WHERE product_id = $1",
                 run)[0][0]
    assert SECRET not in config and "push" in config


def test_a_generated_secret_is_returned_once_and_signs(
    fast_receiver: LiveReceiver, database_url: str
) -> None:
    with serve_endpoint() as ep:
        product = push_product(fast_receiver.base_url, ep.url, new_product_id("gen"), secret=None)
        secret = product.raw["push"]["secret"]
        assert secret.startswith("whsec_")
        post_events(product, product.product_id, range(2))
        got = ep.wait_for(lambda reqs: len(reqs) >= 2 and reqs)
        # Re-registering without a secret keeps it (no rotation, nothing new to show).
        again = push_product(fast_receiver.base_url, ep.url, product.product_id, secret=None,
                             force=True)
        assert again.raw["push"] == {"url": ep.url}
        post_events(product, product.product_id, range(2, 3))
        got = ep.wait_for(lambda reqs: len(reqs) >= 3 and reqs)
    assert_signed(got, secret)
    Webhook(secret).verify(got[0].body, got[0].headers)  # as Standard Webhooks libraries take it
    assert len(got[2].headers["webhook-signature"].split()) == 1


def test_retryable_answers_are_retried_and_with_one_in_flight_later_payloads_wait(
    fast_receiver: LiveReceiver, database_url: str
) -> None:
    answers = iter([503, 429, 500, 408])

    def respond(req: Received) -> tuple[int, dict[str, str]]:
        if req.position == 1:  # the product's first event
            status = next(answers, 200)
            return status, ({"retry-after": "0"} if status == 429 else {})
        return 200, {}

    with serve_endpoint() as ep:
        ep.respond = respond
        product = push_product(fast_receiver.base_url, ep.url, new_product_id("retry"),
                               max_in_flight=1)
        first = post_events(product, product.product_id, range(1))
        rest = post_events(product, product.product_id, range(1, 4))
        ep.wait_for(lambda reqs: len([r for r in reqs if r.status == 200]) >= 4)
        got = ep.snapshot()
        wait_for(lambda: endpoint_row(database_url, product.product_id)["cursor"] == rest[-1])
    assert first == [1]
    assert [(r.position, r.status) for r in got] == [
        (first[0], 503), (first[0], 429), (first[0], 500), (first[0], 408), (first[0], 200),
        *((p, 200) for p in rest),
    ]
    assert len({r.body for r in got[:5]}) == 1 and len({r.webhook_id for r in got[:5]}) == 1
    assert dead_positions(database_url, product.product_id) == []
    attempts = cli_json(database_url, "push", "status", product.product_id)["recent_attempts"]
    outcomes = [(a["position"], a["outcome"], a["status"]) for a in reversed(attempts)]
    assert outcomes[:5] == [(first[0], "retry", s) for s in (503, 429, 500, 408)] + [
        (first[0], "delivered", 200)
    ]


def test_other_client_errors_are_dead_lettered_at_once_and_delivery_moves_on(
    fast_receiver: LiveReceiver, database_url: str
) -> None:
    with serve_endpoint() as ep:
        ep.respond = lambda req: ((400, {}) if req.position == bad[0] else
                                  (302, {"location": "https://elsewhere.test/"})
                                  if req.position == redirected[0] else (200, {}))
        product = push_product(fast_receiver.base_url, ep.url, new_product_id("4xx"),
                               max_in_flight=1)
        ok1 = post_events(product, product.product_id, range(1))
        bad = post_events(product, product.product_id, range(1, 2))
        redirected = post_events(product, product.product_id, range(2, 3))
        ok2 = post_events(product, product.product_id, range(3, 5))
        ep.wait_for(lambda reqs: len(reqs) >= 5)
        got = ep.snapshot()
    assert [(r.position, r.status) for r in got] == [
        (ok1[0], 200), (bad[0], 400), (redirected[0], 302), (ok2[0], 200), (ok2[1], 200)
    ]
    status = cli_json(database_url, "push", "status", product.product_id)
    dead = {d["position"]: d for d in status["dead_letter_list"]}
    assert set(dead) == {bad[0], redirected[0]}
    assert dead[bad[0]]["reason"] == "rejected" and dead[bad[0]]["attempts"] == 1
    assert dead[bad[0]]["last_status"] == 400 and "HTTP 400" in dead[bad[0]]["last_error"]
    assert "redirects are not followed" in dead[redirected[0]]["last_error"]
    assert status["dead_letters"] == 2 and status["lag"] == 0


def test_an_endpoint_down_for_a_while_gets_everything_once_back(
    fast_receiver: LiveReceiver, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """"Down for a minute": connection refused for many backoff periods (the settings make a
    period 50-200 ms), while events keep coming; then back on the same address."""
    with serve_endpoint() as ep:
        port = int(ep.base_url.rsplit(":", 1)[1])
        product = push_product(fast_receiver.base_url, ep.url, new_product_id("down"),
                               max_attempts=1000, max_in_flight=1)
        before = post_events(product, product.product_id, range(3))
        ep.wait_for(lambda reqs: len(reqs) >= 3)
    down_at = time.monotonic()
    during = post_events(product, product.product_id, range(3, 20))
    # Wait until the deliverer has failed many times on the first payload of the outage.
    wait_for(lambda: endpoint_row(database_url, product.product_id)["attempts"] >= 8,
             timeout=30, what="8 failed attempts while the endpoint is down")
    row = endpoint_row(database_url, product.product_id)
    assert row["cursor"] == before[-1] and "ConnectError" in (row["last_error"] or "")
    with serve_endpoint(port) as back:
        after = post_events(product, product.product_id, range(20, 25))
        got = back.wait_for(lambda reqs: len(reqs) >= len(during) + len(after) and reqs,
                            what="the backlog")
        show(capsys, "push outage", failed_attempts_while_down=row["attempts"],
             outage_s=round(time.monotonic() - down_at, 2),
             backlog_delivered_s=round(got[-1].at - got[0].at, 3))
    assert positions_of(got) == during + after
    assert_signed(got)
    assert dead_positions(database_url, product.product_id) == []


def test_500_forever_ends_in_dead_letters_and_retry_redelivers_them_once_fixed(
    receiver_factory: Callable[..., LiveReceiver], database_url: str
) -> None:
    live = receiver_factory(**FAST, push_max_attempts=3)
    with serve_endpoint() as ep:
        ep.status = 500
        product = push_product(live.base_url, ep.url, new_product_id("dead"), max_in_flight=1)
        positions = post_events(product, product.product_id, range(4))
        ep.wait_for(lambda reqs: len(reqs) >= 12, what="3 attempts of each of 4 payloads")
        assert [r.position for r in ep.snapshot()] == [p for p in positions for _ in range(3)]
        wait_for(lambda: dead_positions(database_url, product.product_id) == positions,
                 what="4 dead letters")
        status = cli_json(database_url, "push", "status", product.product_id)
        assert status["dead_letters"] == 4 and status["lag"] == 0
        assert {d["reason"] for d in status["dead_letter_list"]} == {"attempts"}
        assert {d["attempts"] for d in status["dead_letter_list"]} == {3}

        # Fixed: a range first, then the rest; each goes out once more, with the same id.
        ep.status = 200
        seen = len(ep.snapshot())
        out = cli_json(database_url, "push", "retry", product.product_id,
                       "--from", str(positions[1]), "--to", str(positions[2]))
        assert out["queued_for_redelivery"] == 2
        ep.wait_for(lambda reqs: len(reqs) >= seen + 2)
        wait_for(lambda: dead_positions(database_url, product.product_id)
                 == [positions[0], positions[3]], what="two dead letters left")
        receiver_cli(database_url, "push", "retry", product.product_id)
        ep.wait_for(lambda reqs: len(reqs) >= seen + 4)
        wait_for(lambda: dead_positions(database_url, product.product_id) == [],
                 what="no dead letter left")
        redelivered = ep.snapshot()[seen:]
    assert [r.position for r in redelivered] == [positions[1], positions[2], positions[0],
                                                  positions[3]]
    assert all(r.status == 200 for r in redelivered)
    first_try = {r.position: r for r in ep.snapshot()[:12]}
    assert all(r.body == first_try[r.position].body and r.webhook_id == first_try[r.position].webhook_id
               for r in redelivered)
    assert_signed(redelivered)
    row = endpoint_row(database_url, product.product_id)
    assert (row["delivered_total"], row["dead_lettered_total"]) == (4, 4)


def test_skip_gives_up_on_a_range(fast_receiver: LiveReceiver, database_url: str) -> None:
    with serve_endpoint() as ep:
        ep.status = 503
        product = push_product(fast_receiver.base_url, ep.url, new_product_id("skip"),
                               max_attempts=1000, max_in_flight=1)
        stuck = post_events(product, product.product_id, range(3))
        ep.wait_for(lambda reqs: len(reqs) >= 3)
        assert {r.position for r in ep.snapshot()} == {stuck[0]}  # head of line
        refused = receiver_cli(database_url, "push", "skip", product.product_id, check=False)
        assert refused.returncode == 2 and "--yes" in refused.stderr
        out = cli_json(database_url, "push", "skip", product.product_id, "--to", str(stuck[1]),
                       "--yes")
        assert (out["cursor_after"], out["events_skipped"]) == (stuck[1], 2)
        ep.status = 200
        ep.wait_for(lambda reqs: reqs[-1].position == stuck[2] and reqs[-1].status == 200,
                    what="the payload after the skipped range")
        later = post_events(product, product.product_id, range(3, 4))
        ep.wait_for(lambda reqs: reqs[-1].position == later[0])
    assert stuck[1] not in {r.position for r in ep.snapshot()}


def test_secret_rotation_signs_with_both_during_the_grace_period(
    fast_receiver: LiveReceiver, database_url: str
) -> None:
    with serve_endpoint() as ep:
        product = push_product(fast_receiver.base_url, ep.url, new_product_id("rot"))
        rotated = cli_json(database_url, "push", "rotate", product.product_id,
                           "--grace-seconds", "3600")
        new = rotated["push_secret"]
        post_events(product, product.product_id, range(1))
        got = ep.wait_for(lambda reqs: reqs)
        # Re-registering with another secret is a rotation too.
        third = "a-third-secret-for-this-endpoint"
        push_product(fast_receiver.base_url, ep.url, product.product_id, secret=third,
                     force=True)
        post_events(product, product.product_id, range(1, 2))
        got = ep.wait_for(lambda reqs: len(reqs) >= 2 and reqs)
    first, second = got
    assert len(first.headers["webhook-signature"].split()) == 2
    Webhook(new).verify(first.body, first.headers)
    Webhook(SECRET.encode()).verify(first.body, first.headers)
    assert_signed([first], new)  # the SDK's header and the Bearer: the newest secret
    assert first.headers["authorization"] == f"Bearer {new}"
    Webhook(third.encode()).verify(second.body, second.headers)
    Webhook(new).verify(second.body, second.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET.encode()).verify(second.body, second.headers)
    rows = sql(database_url, "SELECT integration_config::text FROM products")
    assert all(new not in r[0] and third not in r[0] for r in rows)


def test_a_replayed_request_is_rejected_once_older_than_the_tolerance(
    fast_receiver: LiveReceiver,
) -> None:
    """What Standard Webhooks adds over the hosted connector: a request recorded by someone in
    the middle and sent again later fails verification; its timestamp cannot be refreshed."""
    with serve_endpoint() as ep:
        product = push_product(fast_receiver.base_url, ep.url, new_product_id("replay"))
        post_events(product, product.product_id, range(1))
        captured = ep.wait_for(lambda reqs: reqs)[0]
    verifier = Webhook(SECRET.encode())
    sent_at = int(captured.headers["webhook-timestamp"])
    with time_machine.travel(sent_at + 4 * 60, tick=False):
        assert verifier.verify(captured.body, captured.headers)["position"]  # still fresh
    with time_machine.travel(sent_at + 5 * 60 + 30, tick=False):
        with pytest.raises(WebhookVerificationError, match="too old"):
            verifier.verify(captured.body, captured.headers)
        refreshed = {**captured.headers, "webhook-timestamp": str(sent_at + 5 * 60 + 30)}
        with pytest.raises(WebhookVerificationError, match="No matching signature"):
            verifier.verify(captured.body, refreshed)
    # The hosted connector's signature alone cannot tell: it still verifies.
    from autoplay_sdk import WebhookReceiver

    assert WebhookReceiver(secret=SECRET).verify(captured.body,
                                                 captured.headers["x-connector-signature"])


def test_a_hanging_endpoint_slows_neither_ingest_nor_the_stream(
    receiver_factory: Callable[..., LiveReceiver],
) -> None:
    import asyncio
    import threading

    release = threading.Event()
    live = receiver_factory(**FAST, push_timeout_seconds=30, push_max_connections=1)

    def hang(req: Received) -> tuple[int, dict[str, str]]:
        release.wait(30)  # the endpoint thread is stuck: no answer
        return 200, {}

    with serve_endpoint() as ep:
        ep.respond = hang
        product = push_product(live.base_url, ep.url, new_product_id("hang"))
        first = post_events(product, product.product_id, range(1))
        ep_started = time.monotonic()
        # While the deliverer waits on that request, 200 events are acknowledged and streamed.
        from tests.sse import Collector

        async def stream_them() -> int:
            async with Collector(product.stream_url + f"?since={first[0]}",
                                 product.stream_key) as col:
                post_events(product, product.product_id, range(1, 201))
                deadline = time.monotonic() + 20
                while len(col.payloads) < 200 and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                return len(col.payloads)

        streamed = asyncio.run(stream_them())
        assert streamed == 200
        assert endpoint_row(live.settings.database_url_str(), product.product_id)["cursor"] < first[0]
        assert time.monotonic() - ep_started < 30  # the hang was still going on
        release.set()
        ep.wait_for(lambda reqs: len([r for r in reqs if r.status == 200]) >= 201,
                    what="everything once the endpoint answers")


def test_the_allow_list_is_checked_at_registration_and_before_every_delivery(
    receiver_factory: Callable[..., LiveReceiver], database_url: str
) -> None:
    strict = receiver_factory(**FAST, push_allowed_hosts="hooks.example.com")
    r = httpx.post(f"{strict.base_url}/products", json={
        "product_id": new_product_id("ssrf"), "contact_email": "ops@example.com",
        "integration_config": {"mode": "push", "url": "http://169.254.169.254/latest/meta-data",
                               "secret": SECRET},
    })
    assert r.status_code == 400 and "RECEIVER_PUSH_ALLOWED_HOSTS" in r.json()["detail"]
    r = httpx.post(f"{strict.base_url}/products", json={
        "product_id": new_product_id("ssrf"), "contact_email": "ops@example.com",
        "integration_config": {"mode": "push", "url": "gopher://hooks.example.com/", "secret": SECRET},
    })
    assert r.status_code == 400 and "http://" in r.json()["detail"]
    # An endpoint registered through another receiver (no allow-list) to a host this one
    # does not allow: held back, with the reason shown, and nothing lost.
    strict.stop()
    with serve_endpoint() as ep:
        lax = receiver_factory(**FAST)
        product = push_product(lax.base_url, ep.url, new_product_id("held"))
        lax.stop()
        strict2 = receiver_factory(**FAST, push_allowed_hosts="hooks.example.com")
        positions = post_events(dataclasses.replace(product, base_url=strict2.base_url),
                                product.product_id, range(2))
        wait_for(lambda: "RECEIVER_PUSH_ALLOWED_HOSTS" in (
            endpoint_row(database_url, product.product_id)["last_error"] or ""),
            what="the held-back reason")
        assert ep.snapshot() == []
        strict2.stop()
        receiver_factory(**FAST)
        got = ep.wait_for(lambda reqs: len(reqs) >= 2 and reqs)
    # Two sessions: each in order, but they may arrive either way round.
    assert sorted(positions_of(got)) == positions


def test_registering_without_push_turns_it_off(
    fast_receiver: LiveReceiver, database_url: str
) -> None:
    with serve_endpoint() as ep:
        product = push_product(fast_receiver.base_url, ep.url, new_product_id("off"))
        register_product(fast_receiver.base_url, product.product_id, force_reregister=True)
        assert sql(database_url, "SELECT count(*) FROM push_endpoints")[0][0] == 0
        post_events(product, product.product_id, range(1))
        # A witness pushed to the same endpoint after it: once the witness's event is there, the
        # service has claimed endpoints since, and the first product had none to claim.
        witness = push_product(fast_receiver.base_url, ep.url, new_product_id("witness"))
        [seen] = post_events(witness, witness.product_id, range(1))
        got = ep.wait_for(lambda reqs: reqs, what="the witness's event")
        assert [(r.webhook_id) for r in got] == [f"{witness.product_id}:{seen}"]
    # The legacy SDK body keeps an SSE product an SSE product.
    plain = register_product(fast_receiver.base_url, new_product_id("sse"),
                             integration_type="event_stream", integration_config={"mode": "sse"},
                             forward_url="", forward_secret="", force_reregister=False)
    assert "push" not in plain.raw


def test_metrics_show_the_lag_per_endpoint(
    receiver_factory: Callable[..., LiveReceiver], database_url: str
) -> None:
    live = receiver_factory(**FAST, push_max_attempts=1000)
    with serve_endpoint() as ep:
        ep.status = 503
        product = push_product(live.base_url, ep.url, new_product_id("lag"))
        post_events(product, product.product_id, range(5))
        ep.wait_for(lambda reqs: len(reqs) >= 2)

        def lag() -> float | None:
            for line in httpx.get(f"{live.base_url}/metrics").text.splitlines():
                if line.startswith(f'receiver_push_lag_events{{product_id="{product.product_id}"}}'):
                    return float(line.split()[1])
            return None

        assert wait_for(lambda: lag() == 5.0, what="lag 5 in /metrics")
        ep.status = 200
        wait_for(lambda: lag() == 0.0, what="lag 0 in /metrics")
        text = httpx.get(f"{live.base_url}/metrics").text
    assert f'receiver_push_attempts_total{{outcome="retry",product_id="{product.product_id}"}}' in text
    delivered = f'receiver_push_attempts_total{{outcome="delivered",product_id="{product.product_id}"}}'
    assert f"{delivered} 5.0" in text



def test_one_at_a_time_the_endpoint_gets_position_order(
    fast_receiver: LiveReceiver, database_url: str
) -> None:
    with serve_endpoint() as ep:
        product = push_product(fast_receiver.base_url, ep.url, new_product_id("strict"),
                               max_in_flight=1)
        positions = post_events(product, product.product_id, range(40))
        got = ep.wait_for(lambda reqs: len(reqs) >= 40 and reqs)
    assert positions_of(got) == positions
    assert endpoint_row(database_url, product.product_id)["max_in_flight"] == 1


def test_the_window_keeps_each_session_in_order(
    receiver_factory: Callable[..., LiveReceiver], database_url: str
) -> None:
    """max_in_flight 4: payloads of different sessions overlap (at most 4 out at once), those of
    one session never do, and each session's arrive in order, a retried one included."""
    import threading

    live = receiver_factory(**FAST, push_max_in_flight=4, push_max_attempts=1000)
    lock = threading.Lock()
    out = {"now": 0, "max": 0, "by_session": {}}
    failing = {"left": 6}

    def respond(req: Received) -> tuple[int, dict[str, str]]:
        session = req.json()["session_id"]
        with lock:
            out["now"] += 1
            out["max"] = max(out["max"], out["now"])
            busy = out["by_session"].get(session, 0)
            out["by_session"][session] = busy + 1
            assert busy == 0, f"two payloads of {session} at once"
        time.sleep(0.02)  # stay out a while, so that requests overlap
        with lock:
            out["now"] -= 1
            out["by_session"][session] -= 1
            if session == sessions[0] and failing["left"] > 0:
                failing["left"] -= 1
                return 503, {}
        return 200, {}

    with serve_endpoint() as ep:
        ep.respond = respond
        product = push_product(live.base_url, ep.url, new_product_id("window"))
        run = product.product_id
        sessions = [f"{run}-{k}" for k in range(6)]
        positions: dict[str, list[int]] = {s_: [] for s_ in sessions}
        for i in range(36):
            session = sessions[i % 6]
            positions[session] += post_events(product, run, range(i, i + 1), session_id=session)
        got = ep.wait_for(lambda reqs: len([r for r in reqs if r.status == 200]) >= 36 and reqs,
                          what="every payload")
    delivered = [r for r in got if r.status == 200]
    per_session: dict[str, list[int]] = {}
    for r in delivered:
        per_session.setdefault(r.json()["session_id"], []).append(r.position)
    assert per_session == positions  # each session: all of them, in position order
    assert 1 < out["max"] <= 4  # overlapping, within the bound
    first_failing = positions[sessions[0]][0]
    assert [r.status for r in got if r.position == first_failing] == [503] * 6 + [200]
    assert dead_positions(database_url, run) == []


def test_an_outage_uses_up_one_payloads_attempts_at_a_time(
    receiver_factory: Callable[..., LiveReceiver], database_url: str
) -> None:
    """With a window of 8 and an endpoint that is down, the deliverer probes with the oldest
    payload alone: the dead letters come one after the other, oldest first, instead of every
    session's payload burning its attempts at once; the first 2xx opens the window again."""
    live = receiver_factory(**FAST, push_max_in_flight=8, push_max_attempts=3)
    with serve_endpoint() as ep:
        ep.status = 503
        product = push_product(live.base_url, ep.url, new_product_id("outage"))
        positions = post_events(product, product.product_id, range(20))  # 16 sessions
        wait_for(lambda: len(dead_positions(database_url, product.product_id)) >= 3,
                 what="3 dead letters")
        dead = dead_positions(database_url, product.product_id)
        tried = {r.position for r in ep.snapshot()}
        assert dead == positions[:len(dead)]
        # Beyond the dead ones, only those out when the outage was first seen were tried.
        assert len(tried - set(dead)) <= 8, sorted(tried)
        ep.status = 200
        got = ep.wait_for(lambda reqs: {r.position for r in reqs if r.status == 200}
                          >= set(positions) - set(dead_positions(database_url, product.product_id))
                          and reqs, what="the rest, once the endpoint is back")
    concurrent_after = [r for r in got if r.status == 200]
    assert len(concurrent_after) == len(positions) - len(dead_positions(database_url,
                                                                         product.product_id))


def test_push_in_a_process_of_its_own(
    receiver_factory: Callable[..., LiveReceiver], database_url: str
) -> None:
    """The layout docs/push.md recommends under load: the ingesting receiver does not push
    (RECEIVER_PUSH_ENABLED=false); another one, woken by its commits, delivers everything."""
    ingest = receiver_factory(**FAST, push_enabled=False)
    pusher = receiver_factory(**FAST)
    assert ingest.runtime.push is None
    with serve_endpoint() as ep:
        product = push_product(ingest.base_url, ep.url, new_product_id("split"))
        positions = post_events(product, product.product_id, range(30))
        got = ep.wait_for(lambda reqs: len(reqs) >= 30 and reqs)
    assert sorted(positions_of(got)) == positions
    assert pusher.runtime.push is not None
    assert [d.product_id for d in pusher.runtime.push.deliverers.values()] == [product.product_id]


def test_maintenance_drops_dead_letters_whose_events_are_gone(
    receiver_factory: Callable[..., LiveReceiver], database_url: str
) -> None:
    live = receiver_factory(**FAST)
    with serve_endpoint() as ep:
        ep.status = 404  # rejects everything: one dead letter per event
        product = push_product(live.base_url, ep.url, new_product_id("prune"))
        positions = post_events(product, product.product_id, range(4))
        wait_for(lambda: dead_positions(database_url, product.product_id) == positions)
    # Retention removed the first two events (as `receiver db maintain` would after their
    # retention period): their dead letters can never be sent again.
    sql(database_url, "DELETE FROM events WHERE product_id = $1 AND position <= $2",
        product.product_id, positions[1])
    out = cli_json(database_url, "db", "maintain")
    assert out["dead_letters_pruned"] == 2
    assert dead_positions(database_url, product.product_id) == positions[2:]
