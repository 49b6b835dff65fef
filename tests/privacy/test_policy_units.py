"""receiver.ingest.privacy as pure functions: policy validation, each rule, the payload walk."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

import orjson
import pytest

from receiver.ingest import normalize, privacy
from receiver.ingest.privacy import REDACTED, Policy

KEY = b"k" * 32
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
EMAIL = "Jane.Doe+vip@Example.org"
CARD = "4111 1111 1111 1111"  # Luhn-valid test number


def expected_hash(email: str) -> str:
    return "h:" + hmac.new(KEY, email.strip().lower().encode(), hashlib.sha256).hexdigest()


def webhook(**overrides: object) -> normalize.NormalizedEvent:
    body = {
        "event": "$autocapture",
        "event_type": "click",
        "uuid": "0193f0c2-7d1e-7a44-9c1b-5f2e8a9d0b11",
        "session_id": "s-1",
        "distinct_id": EMAIL,
        "email": EMAIL,
        "current_url": "https://app.example.com/reset?token=SECRETTOKEN#frag",
        "referrer": "https://mail.example.com/inbox?sid=SECRETSID",
        "elements_chain": (
            f'a.btn:attr__href="/pay?session=SECRETHREF"href="/pay?session=SECRETHREF"text="Pay {CARD}";'
            "body:nth-child=\"1\""
        ),
        "$ip": "203.0.113.77",
        "props": {"client": "198.51.100.23", "nested": [{"ip": "10.1.2.3"}, "2001:db8::1"]},
    }
    body.update(overrides)
    return normalize.from_webhook(body, received_at=NOW)


def everything(event: normalize.NormalizedEvent) -> str:
    return orjson.dumps(
        {k: getattr(event, k) for k in event.__dataclass_fields__}, default=str
    ).decode()


# --------------------------------------------------------------------------- validation


def test_default_policy_and_round_trip() -> None:
    assert Policy.from_json({}) == privacy.DEFAULT
    assert Policy.from_json(None) == privacy.DEFAULT
    assert privacy.DEFAULT.to_json() == {
        "email": "keep", "query": "keep", "builtin_redactions": ["card_number", "email"], "redact": [],
    }
    p = Policy.from_json({"email": "hash", "query": "strip", "redact": [r"ACME-\d{6}"]})
    assert Policy.from_json(p.to_json()) == p
    assert p.needs_hash_key


@pytest.mark.parametrize(
    "bad",
    [
        {"email": "encrypt"},
        {"query": "remove"},
        {"redact": "x"},
        {"redact": ["("]},
        {"redact": ["a*"]},  # matches the empty string
        {"builtin_redactions": ["ssn"]},
        {"colour": "blue"},
        ["email"],
    ],
)
def test_invalid_policies_are_refused(bad: object) -> None:
    with pytest.raises(privacy.PolicyError):
        Policy.from_json(bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- rules


def test_card_numbers_luhn_checked_with_separators() -> None:
    s = privacy._Scrubber(privacy.DEFAULT, None)
    assert s.text(f"card {CARD} ok") == f"card {REDACTED} ok"
    assert s.text("4111-1111-1111-1111") == REDACTED
    assert s.text("x4111111111111111y") == f"x{REDACTED}y"
    assert s.text("5500 0000 0000 0004") == REDACTED  # 16 digits, Luhn-valid
    assert s.text("378282246310005") == REDACTED  # 15-digit Amex test number
    # Not Luhn-valid, too short, or part of a longer number: left alone.
    assert s.text("4111 1111 1111 1112") == "4111 1111 1111 1112"
    assert s.text("order 123456789012") == "order 123456789012"
    assert s.text("12345678901234567890123") == "12345678901234567890123"


def test_emails_redacted_in_text_also_url_encoded() -> None:
    s = privacy._Scrubber(privacy.DEFAULT, None)
    assert s.text("Signed in as jane@example.com") == f"Signed in as {REDACTED}"
    assert s.url("https://x.test/u?e=jane%40example.com&a=1") == f"https://x.test/u?e={REDACTED}&a=1"


def test_default_policy_keeps_email_and_query_strings() -> None:
    event = privacy.apply(privacy.DEFAULT, webhook())
    assert event.email == EMAIL
    assert event.distinct_id == EMAIL
    assert event.current_url == "https://app.example.com/reset?token=SECRETTOKEN#frag"
    assert event.payload["email"] == EMAIL
    # ...but card numbers and IPs go, whatever the policy.
    text = everything(event)
    assert "4111" not in text
    assert "203.0.113.77" not in text and "198.51.100.23" not in text
    assert "10.1.2.3" not in text and "2001:db8::1" not in text


def test_hash_policy() -> None:
    policy = Policy.from_json({"email": "hash"})
    event = privacy.apply(policy, webhook(), KEY)
    assert event.email == expected_hash(EMAIL)
    assert event.distinct_id == expected_hash(EMAIL)  # an email used as distinct_id
    assert event.payload["email"] == expected_hash(EMAIL)
    assert EMAIL.lower() not in everything(event).lower()
    # Case-insensitive, stable, idempotent.
    assert privacy.hash_email(EMAIL.upper(), KEY) == expected_hash(EMAIL)
    assert privacy.hash_email(expected_hash(EMAIL), KEY) == expected_hash(EMAIL)
    # Non-email distinct ids are left alone.
    assert privacy.apply(policy, webhook(distinct_id="user-42"), KEY).distinct_id == "user-42"


def test_hash_policy_without_key_refuses() -> None:
    with pytest.raises(privacy.HashKeyMissingError):
        privacy.apply(Policy.from_json({"email": "hash"}), webhook())


def test_drop_policy() -> None:
    event = privacy.apply(Policy.from_json({"email": "drop"}), webhook())
    assert event.email is None
    assert event.distinct_id is None
    assert "email" not in event.payload
    assert "example.org" not in everything(event).lower()


def test_strip_query_everywhere() -> None:
    event = privacy.apply(Policy.from_json({"query": "strip"}), webhook())
    assert event.current_url == "https://app.example.com/reset"
    assert event.referrer == "https://mail.example.com/inbox"
    assert event.link_target == "/pay"
    text = everything(event)
    for secret in ("SECRETTOKEN", "SECRETSID", "SECRETHREF", "frag"):
        assert secret not in text
    assert 'href="/pay"' in event.payload["elements_chain"]


def test_custom_patterns_apply_to_text_urls_and_payload() -> None:
    policy = Policy.from_json({"redact": [r"ACME-\d{6}"], "builtin_redactions": []})
    event = privacy.apply(
        policy,
        webhook(
            elements_chain='button:text="Order ACME-123456"',
            current_url="https://x.test/orders/ACME-123456",
            note="ref ACME-123456",
        ),
    )
    assert event.element_text == f"Order {REDACTED}"
    assert "ACME-123456" not in everything(event)
    # With builtins off, card numbers stay.
    assert "4111" in everything(privacy.apply(policy, webhook()))


def test_stock_template_body_and_nested_person() -> None:
    body = {
        "event": {
            "event": "$pageview",
            "uuid": "0193f0c2-7d1e-7a44-9c1b-5f2e8a9d0b12",
            "distinct_id": "user-1",
            "properties": {
                "$current_url": "https://app.example.com/?invite=SECRETINVITE",
                "$ip": "203.0.113.77",
                "$set": {"email": EMAIL},
                "$initial_referrer": "https://google.test/search?q=SECRETQ",
            },
        },
        "person": {"properties": {"email": EMAIL, "$geoip_city_name": "Paris"}},
    }
    event = normalize.from_webhook(body, received_at=NOW)
    out = privacy.apply(Policy.from_json({"email": "drop", "query": "strip"}), event)
    text = everything(out)
    for secret in ("SECRETINVITE", "SECRETQ", "203.0.113.77", "example.org"):
        assert secret.lower() not in text.lower()
    assert out.payload["person"]["properties"]["$geoip_city_name"] == "Paris"


def test_ip_detection() -> None:
    for ip in ("203.0.113.77", "2001:db8::1", "::1", "[2001:db8::1]:443", "10.0.0.1:8080", " 8.8.8.8 "):
        assert privacy.looks_like_ip(ip), ip
    for not_ip in ("1.2.3", "v1.2.3.4", "12:30", "example.com", "1.200.0", ""):
        assert not privacy.looks_like_ip(not_ip), not_ip


def test_identifiers_are_never_rewritten() -> None:
    event = webhook(session_id="4111111111111111")
    out = privacy.apply(privacy.DEFAULT, event)
    assert out.session_id == "4111111111111111"
    assert out.dedup_key == event.dedup_key
    assert out.event_uuid == event.event_uuid


def test_invalid_stored_policy_fails_closed() -> None:
    with pytest.raises(privacy.PolicyUnusableError):
        privacy.apply(Policy(error="broken"), webhook())


def test_titles_are_rebuilt_from_redacted_sources() -> None:
    policy = Policy.from_json({"redact": [r"ACME-\d{6}"]})
    page = normalize.from_webhook(
        {"event": "$pageview", "current_url": "https://x.test/orders/ACME-482913"}, received_at=NOW
    )
    assert "Acme 482913" in page.title  # how the normalizer names the page
    out = privacy.apply(policy, page)
    assert "482913" not in out.title + out.description
    click = webhook(elements_chain='button:text="Refund  ACME-482913"', current_url="https://x.test/a")
    out = privacy.apply(policy, click)
    assert "482913" not in out.title + out.description
    assert out.title == f"Click Refund {REDACTED} button"
