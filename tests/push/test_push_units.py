"""The pure parts of push mode, checked against the real verifiers: the stock
``autoplay_sdk.WebhookReceiver`` (0.7.2, this venv) and the ``standardwebhooks`` package."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import orjson
import pytest
from autoplay_sdk import WebhookReceiver
from standardwebhooks import Webhook, WebhookVerificationError

from receiver.delivery.push import destination, policy, signing
from receiver.delivery.push.destination import PushTarget
from receiver.delivery.push.policy import Verdict
from receiver.errors import BadRequestError

BODY = orjson.dumps({"type": "actions", "product_id": "acme", "session_id": "s1", "actions": [],
                     "count": 0, "forwarded_at": 1.0})
RAW_SECRET = "a-shared-secret-of-some-length"
WHSEC = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def _headers(secrets: list[str], *, ts: int | None = None) -> dict[str, str]:
    return signing.request_headers(
        BODY, secrets=secrets, msg_id="acme:7",
        timestamp=ts if ts is not None else int(datetime.now(UTC).timestamp()), send_bearer=True,
    )


# --------------------------------------------------------------------------- signatures


@pytest.mark.parametrize("secret", [RAW_SECRET, WHSEC])
def test_the_stock_webhook_receiver_verifies_the_connector_signature(secret: str) -> None:
    headers = _headers([secret])
    assert WebhookReceiver(secret=secret).verify(BODY, headers["x-connector-signature"])
    assert not WebhookReceiver(secret="another-secret-entirely").verify(
        BODY, headers["x-connector-signature"]
    )
    assert not WebhookReceiver(secret=secret).verify(BODY + b" ", headers["x-connector-signature"])


def test_a_standard_webhooks_verifier_accepts_both_secret_forms() -> None:
    # whsec_ secrets are taken as Standard Webhooks libraries take them; any other secret is
    # keyed by its UTF-8 bytes (pass bytes to the library).
    for secret, key in ((WHSEC, WHSEC), (RAW_SECRET, RAW_SECRET.encode())):
        assert Webhook(key).verify(BODY, _headers([secret])) == orjson.loads(BODY)
        with pytest.raises(WebhookVerificationError):
            Webhook(b"not the key").verify(BODY, _headers([secret]))


def test_during_a_rotation_both_secrets_verify_and_the_sdk_header_uses_the_new_one() -> None:
    new, old = WHSEC, RAW_SECRET
    headers = _headers([new, old])
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert Webhook(new).verify(BODY, headers) is not None
    assert Webhook(old.encode()).verify(BODY, headers) is not None
    assert WebhookReceiver(secret=new).verify(BODY, headers["x-connector-signature"])
    assert headers["authorization"] == f"Bearer {new}"


def test_the_timestamp_is_signed_so_it_cannot_be_refreshed() -> None:
    old_ts = int(datetime.now(UTC).timestamp()) - 600
    stale = _headers([WHSEC], ts=old_ts)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(WHSEC).verify(BODY, stale)
    refreshed = {**stale, "webhook-timestamp": str(int(datetime.now(UTC).timestamp()))}
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(WHSEC).verify(BODY, refreshed)


def test_bearer_is_optional() -> None:
    headers = signing.request_headers(BODY, secrets=[RAW_SECRET], msg_id="a:1", timestamp=1,
                                      send_bearer=False)
    assert "authorization" not in headers


# --------------------------------------------------------------------------- retry policy


@pytest.mark.parametrize(
    ("status", "expected"),
    [(200, Verdict.DELIVERED), (204, Verdict.DELIVERED), (None, Verdict.RETRY), (408, Verdict.RETRY),
     (429, Verdict.RETRY), (500, Verdict.RETRY), (503, Verdict.RETRY), (400, Verdict.REJECTED),
     (401, Verdict.REJECTED), (404, Verdict.REJECTED), (410, Verdict.REJECTED),
     (301, Verdict.REJECTED), (307, Verdict.REJECTED)],
)
def test_verdicts(status: int | None, expected: Verdict) -> None:
    assert policy.verdict(status) is expected


def test_backoff_doubles_up_to_the_cap_with_jitter_between_half_and_all() -> None:
    base, cap = 1.0, 300.0
    full = [policy.backoff_seconds(n, base=base, cap=cap, rand=0.999999) for n in range(1, 12)]
    half = [policy.backoff_seconds(n, base=base, cap=cap, rand=0.0) for n in range(1, 12)]
    assert [round(x) for x in full] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert all(abs(h - f / 2) < 1e-3 for h, f in zip(half, full, strict=True))
    assert policy.backoff_seconds(10_000, base=base, cap=cap, rand=0.5) <= cap


def test_retry_after_is_honoured_and_bounded() -> None:
    now = 1_800_000_000.0
    assert policy.retry_after_seconds("120", now) == 120
    assert policy.retry_after_seconds("Thu, 15 Jan 2027 08:00:30 GMT", 1_800_000_000.0) == pytest.approx(
        datetime(2027, 1, 15, 8, 0, 30, tzinfo=UTC).timestamp() - now
    )
    assert policy.retry_after_seconds("99999999", now) == policy.MAX_RETRY_AFTER_SECONDS
    for bad in ("", None, "soon", "-5", "1e9", "x" * 100):
        assert policy.retry_after_seconds(bad, now) is None
    limits = policy.Limits(max_attempts=10, max_age_seconds=86400, backoff_base_seconds=1,
                           backoff_max_seconds=5)
    when, why = policy.next_attempt(limits, failures=1, first_attempt_at=now, now=now,
                                    retry_after=60.0, rand=0.0)
    assert (when, why) == (now + 60, None)


def test_giving_up_after_the_attempts_or_the_age() -> None:
    limits = policy.Limits(max_attempts=3, max_age_seconds=10, backoff_base_seconds=1,
                           backoff_max_seconds=100)
    assert policy.next_attempt(limits, failures=2, first_attempt_at=0, now=1, retry_after=None,
                               rand=0.0)[1] is None
    assert policy.next_attempt(limits, failures=3, first_attempt_at=0, now=1, retry_after=None,
                               rand=0.0) == (None, "attempts")
    # The next try would come more than 10 s after the first one.
    assert policy.next_attempt(limits, failures=2, first_attempt_at=0, now=9, retry_after=None,
                               rand=0.9) == (None, "age")


# --------------------------------------------------------------------------- destinations


def test_every_push_registration_form_is_recognised() -> None:
    secret = "s" * 16
    push = destination.from_registration(
        "event_stream", {"mode": "push", "url": "https://h.example/e", "secret": secret}, {}
    )
    assert push == PushTarget("https://h.example/e", secret)
    legacy = destination.from_registration(
        "webhook", None, {"forward_url": "https://h.example/f", "forward_secret": secret}
    )
    assert legacy == PushTarget("https://h.example/f", secret)
    webhook_type = destination.from_registration(
        "webhook", {"url": "https://h.example/w", "secret": secret}, {}
    )
    assert webhook_type == PushTarget("https://h.example/w", secret)
    forward_only = destination.from_registration(
        "event_stream", {"mode": "sse"}, {"forward_url": "https://h.example/x"}
    )
    assert forward_only == PushTarget("https://h.example/x", None)
    # The stock 0.7.2 onboarding body: SSE, empty forward fields.
    assert destination.from_registration(
        "event_stream", {"mode": "sse"}, {"forward_url": "", "forward_secret": ""}
    ) is None
    limits = destination.from_registration(
        "event_stream",
        {"mode": "push", "url": "https://h.example/e", "max_attempts": 3, "max_age_seconds": 60},
        {},
    )
    assert limits is not None and (limits.max_attempts, limits.max_age_seconds) == (3, 60)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"mode": "push"}, "needs a destination"),
        ({"mode": "push", "url": 5}, "needs a destination"),
        ({"mode": "push", "url": "https://h.example", "secret": "short"}, "16 to 512"),
        ({"mode": "push", "url": "https://h.example", "secret": 12}, "must be a string"),
        ({"mode": "push", "url": "https://h.example", "max_attempts": 0}, "max_attempts"),
        ({"mode": "push", "url": "https://h.example", "max_attempts": True}, "max_attempts"),
    ],
)
def test_bad_push_registrations_are_refused(config: dict[str, object], message: str) -> None:
    with pytest.raises(BadRequestError, match=message):
        destination.from_registration("event_stream", config, {})


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://h.example/x", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("gopher://127.0.0.1:6379/_x", "http:// or https://"),
        ("https:///nohost", "no host"),
        ("https://h.example:99999/", "not a valid URL"),
        ("https://h.example/a b", "control characters"),
        ("https://h.example/\nx", "control characters"),
        ("https://h.example/x#frag", "fragment"),
        ("https://h.example/" + "x" * 3000, "at most"),
        ("relative/path", "http:// or https://"),
    ],
)
def test_bad_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(BadRequestError, match=message):
        destination.validate_url(url, ())


def test_the_allow_list() -> None:
    allowed = destination.parse_allowed_hosts(" hooks.example.com, *.internal.example ,10.0.0.5,[::1]")
    assert allowed == ("hooks.example.com", "*.internal.example", "10.0.0.5", "::1")
    ok = ["https://hooks.example.com/x", "http://HOOKS.example.com.:8080/",
          "https://a.internal.example/", "https://a.b.internal.example/", "http://10.0.0.5/",
          "http://[::1]:9000/", "http://[0:0:0:0:0:0:0:1]/"]
    for url in ok:
        assert destination.validate_url(url, allowed) == url
    refused = ["https://internal.example/", "https://evilhooks.example.com/",
               "https://hooks.example.com.evil.test/", "http://169.254.169.254/latest/meta-data",
               "http://127.0.0.1/", "http://10.0.0.6/", "https://user@evil.test/"]
    for url in refused:
        with pytest.raises(BadRequestError, match="not allowed"):
            destination.validate_url(url, allowed)
    assert destination.validate_url("http://anything.test/", ()) == "http://anything.test/"


def test_urls_are_shown_without_credentials_or_query() -> None:
    assert destination.redact_url("https://bob:hunter2@h.example:8443/in?token=abc") == (
        "https://***@h.example:8443/in?…"
    )
    assert destination.redact_url("http://[::1]:9/x") == "http://[::1]:9/x"
    assert destination.redact_url("https://h.example:bad/") == "<invalid url>"
    target = PushTarget("https://bob:hunter2@h.example/", "s" * 20)
    assert "hunter2" not in repr(target) and "s" * 20 not in repr(target)
    stored = destination.stored_config({"mode": "push", "url": target.url, "secret": "s" * 20}, target)
    assert stored == {"mode": "push", "url": "https://***@h.example/"}
