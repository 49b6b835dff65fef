"""Per-request budgets, end to end: the adversarial corpus against a live receiver.

For every hostile request (tests/security/adversarial.py), all within the documented limits:

* it is answered or refused: the status is the one expected, a 4xx has a JSON ``detail``, and a
  refusal by a cap names the ``RECEIVER_*`` setting that refused it;
* ``/healthz``, probed without pause from another thread the whole time, always answers, and
  the receiver shows *why* it could: every accepted request whose decoded body is over
  ``RECEIVER_OFFLOAD_BYTES`` had its parsing, normalizing and scrubbing done on the offload
  thread (its counter moved), and every refused one was stopped by a cap (structural, not a
  timing);
* the caps hold: exactly the accepted requests' events are stored, none of a refused one.

Unit tests of the value count and the per-event walk follow.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from receiver.errors import BadRequestError, PayloadTooLargeError
from receiver.ingest import budget
from tests.faults.kit import count_events, nodelay, show
from tests.security.adversarial import Hostile, corpus, gz, normal_event_body

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "posthog_js_requests"


class Prober:
    """Polls /healthz from its own thread until stopped; every answer is recorded."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.statuses: list[int] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as c:
            while not self._stop.is_set():
                try:
                    self.statuses.append(c.get(f"{self.base_url}/healthz").status_code)
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                self._stop.wait(0.005)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def send(client: httpx.Client, product: Any, h: Hostile) -> httpx.Response:
    if h.route == "capture":
        return client.post(f"{product.base_url}/e/", content=h.body,
                           headers={"content-type": h.content_type, **h.headers})
    return client.post(product.webhook_url, content=h.body,
                       headers={"content-type": h.content_type,
                                "x-posthog-secret": product.webhook_secret, **h.headers})


def events_in(h: Hostile) -> int:
    body = orjson.loads(gzip.decompress(h.body) if h.body[:2] == b"\x1f\x8b" else h.body)
    if h.route == "webhook":
        return 1
    return len(body["batch"]) if isinstance(body, dict) else len(body)


def test_adversarial_corpus_is_answered_within_budget_and_never_holds_healthz(
    receiver: Any, make_product: Callable[..., Any], database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    nodelay(receiver)
    product = make_product()
    rt = receiver.runtime
    threshold = rt.settings.offload_bytes
    hostile = corpus(product.capture_token)
    outcomes: dict[str, str] = {}
    accepted_events = 0
    with Prober(receiver.base_url) as prober, httpx.Client(timeout=120) as client:
        for h in hostile:
            before = rt.offload.offloaded_runs
            r = send(client, product, h)
            ran_off_loop = rt.offload.offloaded_runs - before
            assert r.status_code in h.expect, (h.name, r.status_code, r.text[:300])
            outcomes[h.name] = f"{r.status_code}{'/offloaded' if ran_off_loop else ''}"
            if r.status_code >= 400:
                detail = r.json()["detail"]
                assert isinstance(detail, str) and detail, h.name
                if h.cap is not None:
                    assert h.cap in detail, (h.name, detail)  # the cap stopped it
            else:
                accepted_events += events_in(h)
                if h.decoded_size > threshold:
                    # Parsing, normalizing and scrubbing ran on the offload thread.
                    assert ran_off_loop >= 1, h.name
        probes_during_corpus = len(prober.statuses)

        # Four of the costliest accepted requests at once, still with /healthz probed.
        heavy = sorted((h for h in corpus(product.capture_token, salt="4x") if h.expect == {200}),
                       key=lambda h: h.decoded_size)[-4:]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            def one(h: Hostile) -> int:
                with httpx.Client(timeout=120) as c:
                    return send(c, product, h).status_code
            four = list(pool.map(one, heavy))
        accepted_events += sum(events_in(h) for h in heavy)
    assert four == [200] * 4, four
    # /healthz answered throughout, every time.
    assert prober.errors == [] and set(prober.statuses) == {200}, (prober.errors[:3], set(prober.statuses))
    assert probes_during_corpus > 0
    # The caps held: what was accepted is stored, nothing of what was refused.
    assert count_events(database_url, product.product_id) == accepted_events
    show(capsys, "security/adversarial-corpus", requests=len(hostile) + 4, outcomes=outcomes,
         healthz_probes=len(prober.statuses), offload_threshold=threshold,
         offloaded_steps=rt.offload.offloaded_runs, stored_events=accepted_events)


def test_a_flood_of_large_bodies_is_refused_with_503_not_queued_without_bound(
    receiver_factory: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """At most RECEIVER_OFFLOAD_QUEUE large bodies wait per process; the rest get 503 + Retry-After."""
    live = nodelay(receiver_factory(offload_queue=1))
    product = live_product(live)
    bodies = [h for i in range(8) for h in corpus(product.capture_token, salt=f"q{i}")
              if h.name == "card-like-digits"]
    assert len(bodies) == 8
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        def one(h: Hostile) -> httpx.Response:
            with httpx.Client(timeout=120) as c:
                return send(c, product, h)
        answers = list(pool.map(one, bodies))
    statuses = sorted(r.status_code for r in answers)
    assert set(statuses) <= {200, 503} and 200 in statuses, statuses
    for r in answers:
        if r.status_code == 503:
            assert int(r.headers["retry-after"]) >= 1 and r.json()["detail"]
    show(capsys, "security/offload-queue", queue=1, concurrent=8, statuses=statuses,
         refused=live.runtime.offload.refused)


def live_product(live: Any) -> Any:
    from tests.conftest import register_product
    from tests.faults.kit import new_product_id

    return register_product(live.base_url, new_product_id("adv"))


# --------------------------------------------------------------------------- units


def nodes(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + sum(1 + nodes(v) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(nodes(v) for v in value)
    return 1


def empty_containers(value: Any) -> int:
    if isinstance(value, dict | list):
        children = value.values() if isinstance(value, dict) else value
        return (not value) + sum(empty_containers(v) for v in children)
    return 0


def test_value_count_is_exact_on_real_posthog_js_bodies() -> None:
    """Exact but for one per empty container ({} or []), counted as if it had a child."""
    decoded = sorted(FIXTURES.glob("*.decoded.json"))
    assert decoded
    for path in decoded:
        raw = path.read_bytes()
        doc = orjson.loads(raw)
        assert budget.count_nodes(raw) == nodes(doc) + empty_containers(doc), path.name


@pytest.mark.parametrize("doc", [
    b'{"a":"x,y:[{","b":[1,2,{"c":null}],"d":"\\"q\\",","e":{}}',
    b'[[],[],{},{"k":[]}]',
    b'"just a string"',
    b'[1,"\\\\",2]',
])
def test_value_count_never_undercounts(doc: bytes) -> None:
    assert budget.count_nodes(doc) >= nodes(orjson.loads(doc))


def test_prescan_refuses_before_parsing() -> None:
    small = budget.Budget(max_request_nodes=1000)
    budget.prescan(orjson.dumps([{"a": i} for i in range(300)]), small)  # 1 + 300 * 3 = 901
    with pytest.raises(PayloadTooLargeError, match="RECEIVER_MAX_REQUEST_NODES"):
        budget.prescan(b"[" + b"{}," * 2000 + b"{}]", small)
    # Strings, however many commas and brackets they hold, are one value each.
    budget.prescan(orjson.dumps({"a": "[{,:" * 10_000}), small)


def test_check_event_enforces_every_cap_and_cleans_in_place() -> None:
    b = budget.Budget(max_event_nodes=100, max_depth=4, max_string_chars=10)
    event = {"k\x00": ["a\x00", {"b": "c\x00"}], "n": 1}
    assert budget.check_event(event, b) is event
    assert event == {"k\ufffd": ["a\ufffd", {"b": "c\ufffd"}], "n": 1}
    with pytest.raises(PayloadTooLargeError, match="RECEIVER_MAX_EVENT_NODES"):
        budget.check_event({"x": list(range(100))}, b)
    with pytest.raises(PayloadTooLargeError, match="RECEIVER_MAX_STRING_CHARS"):
        budget.check_event({"x": ["y" * 11]}, b)
    with pytest.raises(PayloadTooLargeError, match="RECEIVER_MAX_STRING_CHARS"):
        budget.check_event({"k" * 11: 1}, b)
    with pytest.raises(BadRequestError, match="nested deeper"):
        budget.check_event({"x": [[[[[1]]]]]}, b)
    budget.check_event({"x": [[[1]]]}, b)


def test_capture_budget_settings_apply(
    receiver_factory: Callable[..., Any], database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every cap is a setting: lowered, it refuses what the default accepts, and says which."""
    live = nodelay(receiver_factory(max_events_per_request=2, max_string_chars=2048,
                                    max_decompressed_bytes=4096, max_event_nodes=200))
    product = live_product(live)
    token = product.capture_token
    seen = {}
    with httpx.Client(timeout=30) as c:
        def post(name: str, events: list[Any]) -> httpx.Response:
            body = gz(orjson.dumps({"api_key": token, "batch": events}))
            r = c.post(f"{live.base_url}/e/", content=body, headers={"content-type": "text/plain"})
            seen[name] = r.status_code
            return r

        assert post("ok", [{"event": "e", "uuid": "00000000-0000-4000-8000-000000000001"}]).status_code == 200
        cases = {
            "RECEIVER_MAX_EVENTS_PER_REQUEST": [{"event": "e"}] * 3,
            "RECEIVER_MAX_STRING_CHARS": [{"event": "e", "p": "x" * 2049}],
            "RECEIVER_MAX_DECOMPRESSED_BYTES": [{"event": "e", "p": ["x" * 2000] * 3}],
            "RECEIVER_MAX_EVENT_NODES": [{"event": "e", "p": list(range(200))}],
        }
        for setting, events in cases.items():
            r = post(setting, events)
            assert r.status_code == 413 and setting in r.json()["detail"], (setting, r.text)
    assert count_events(database_url, product.product_id) == 1
    show(capsys, "security/budget-settings", statuses=seen)


def test_normal_posthog_js_request_stays_inline(receiver: Any, make_product: Callable[..., Any]) -> None:
    """A real single-event request is well under RECEIVER_OFFLOAD_BYTES: no thread hand-off."""
    nodelay(receiver)
    product = make_product()
    rt = receiver.runtime
    before = rt.offload.offloaded_runs
    r = httpx.post(f"{receiver.base_url}/e/", content=normal_event_body(product.capture_token),
                   headers={"content-type": "text/plain"}, timeout=10)
    assert r.status_code == 200
    assert rt.offload.offloaded_runs == before
