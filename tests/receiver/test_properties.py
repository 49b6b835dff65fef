"""Property tests: the normalizer and the elements_chain parser never crash and stay bounded.

* ``receiver.ingest.normalize.from_webhook`` / ``from_capture`` raise nothing but
  :class:`receiver.errors.BadRequestError` (a 400) for any JSON value ``orjson`` can decode,
  and every column they produce fits its documented bound and is storable in Postgres (no
  NUL characters; identifiers free of control characters).
* ``receiver.ingest.elements.parse_elements_chain`` / ``target_from_chain`` never raise, for any
  string, and their output is bounded by the module's caps.

Inputs are JSON-shaped (what the HTTP layer hands over after ``orjson.loads``), biased towards
the fields the normalizer reads, with hostile values: control characters, huge and malformed
timestamps, odd URLs, chains built from the grammar and then corrupted.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from receiver.errors import BadRequestError
from receiver.ingest import elements, normalize
from receiver.ingest.normalize import NormalizedEvent

RECEIVED_AT = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
PROFILE = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)

# --------------------------------------------------------------------------- strategies

# Any text orjson can produce (no lone surrogates), with control characters well represented.
chars = st.characters(codec="utf-8")
nasty_chars = st.sampled_from(["\x00", "\n", "\r", "\t", "\x1b", "\x7f", "\u202e", "\ufeff", "\u0301",
                               "😀", '"', "\\", ";", ":", "=", "/", "?", "#", "%", " "])
text = st.one_of(
    st.text(chars, max_size=24),
    st.lists(st.one_of(nasty_chars, chars), max_size=24).map("".join),
    st.builds(lambda c, n: c * n, st.sampled_from(["a", " ", "\x00", "é", "9"]), st.integers(0, 20_000)),
)
json_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
json_floats = st.floats(allow_nan=False, allow_infinity=False)
json_scalars = st.one_of(st.none(), st.booleans(), json_ints, json_floats, text)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(chars, max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)

event_names = st.one_of(
    st.sampled_from(["$pageview", "$autocapture", "$rageclick", "$dead_click", "$copy_autocapture",
                     "$identify", "$pageleave", "signed up", "$set", "", " "]),
    text,
)
event_types = st.one_of(st.sampled_from(["click", "submit", "change", "copy", "cut", "CLICK"]), text)


@st.composite
def timestamps(draw: st.DrawFn) -> Any:
    kind = draw(st.integers(0, 4))
    if kind == 0:
        dt = draw(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31),
                               timezones=st.just(UTC)))
        offset = draw(st.integers(-23 * 60, 23 * 60))
        sign = "+" if offset >= 0 else "-"
        hh, mm = divmod(abs(offset), 60)
        suffix = draw(st.sampled_from(["Z", "z", "", f"{sign}{hh:02d}:{mm:02d}"]))
        return dt.replace(tzinfo=None).isoformat() + suffix
    if kind == 1:
        return draw(st.one_of(json_ints, json_floats))
    if kind == 2:
        return draw(st.sampled_from([
            "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "9999-12-31T23:59:59.999999Z",
            "2026-13-01T00:00:00Z", "2026-11-26", "2026-11-26T12:00:00+25:00", "now", "",
            "1e400", "-0", "2026-11-26T12:00:00.123456789Z",
        ]))
    if kind == 3:
        return draw(text)
    return draw(json_values)


@st.composite
def urls(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 5)) == 0:
        return draw(json_values)
    scheme = draw(st.sampled_from(["https", "http", "HTTP", "javascript", "", "file", "data"]))
    host = draw(st.one_of(st.sampled_from(["app.example.com", "例え.テスト", "[::1", "[::1]:99999",
                                           "a:b@c:d", "", "x" * 300]), text))
    segs = draw(st.lists(st.one_of(
        st.sampled_from(["123", str(uuid.UUID(int=7)), "deadbeef42", "a" * 40 + "9", ":id", "..", "%2F"]),
        text,
    ), max_size=8))
    tail = draw(st.sampled_from(["", "?q=1#x", "#frag", "?" + "a" * 100]))
    return f"{scheme}://{host}/" + "/".join(segs) + tail


@st.composite
def chains(draw: st.DrawFn) -> str:
    """A chain from the serializer's grammar, sometimes corrupted."""
    n = draw(st.integers(0, 6))
    parts = []
    for _ in range(n):
        tag = draw(st.one_of(st.sampled_from(["a", "button", "input", "span", "div", "svg", "x-y", "A"]),
                             text))
        classes = draw(st.lists(st.one_of(st.sampled_from(["btn", "hover:bg-x", ":r1f:"]), text), max_size=3))
        attrs = draw(st.lists(st.tuples(
            st.one_of(st.sampled_from(["text", "href", "attr__id", "attr_id", "attr__name",
                                       "attr__class", "nth-child", "attr__role", "attr__type",
                                       "attr__aria-label", "attr__value"]), text),
            st.one_of(text, st.sampled_from(["", "\\", 'a\\"b', "x;y", "button", "submit"])),
        ), max_size=5))
        header = ".".join([tag, *classes])
        body = "".join(f'{k}="{v.replace(chr(34), chr(92) + chr(34))}"' for k, v in attrs)
        parts.append(f"{header}:{body}")
    chain = ";".join(parts)
    if chain and draw(st.booleans()):
        cut = draw(st.integers(0, len(chain)))
        chain = chain[:cut] + draw(text) + chain[cut:]
    return chain


FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "event": event_names,
    "uuid": st.one_of(st.uuids().map(str), st.uuids().map(lambda u: str(u).upper()), text, json_values),
    "event_type": event_types,
    "timestamp": timestamps(),
    "session_id": st.one_of(text, json_values),
    "distinct_id": st.one_of(text, json_ints, json_values),
    "email": st.one_of(st.builds("{}@{}.example".format, text, text), text, json_values),
    "current_url": urls(),
    "referrer": urls(),
    "elements_chain": st.one_of(chains(), json_values),
    "$el_text": text,
    "element_id": text,
    "input_field_name": text,
    "link_destination": urls(),
    "button_or_link_text": text,
    "extra": json_values,
}
# The aliases the normalizer also reads ("$session_id", "captured_at", …) are rarer in real
# payloads: one of them at a time rides along.
ALIASES = st.one_of(
    st.fixed_dictionaries({"event_uuid": text}), st.fixed_dictionaries({"$event_type": event_types}),
    st.fixed_dictionaries({"captured_at": timestamps()}), st.fixed_dictionaries({"$session_id": text}),
    st.fixed_dictionaries({"$current_url": urls()}), st.just({}),
)
webhook_bodies = st.builds(lambda a, b: {**a, **b}, ALIASES, st.fixed_dictionaries({}, optional=FIELDS))

CAPTURE_PROPS = {
    "$session_id": FIELDS["session_id"],
    "$referrer": urls(),
    "$el_text": text,
    "$elements_chain": chains(),
    "email": FIELDS["email"],
    "distinct_id": text,
    "other": json_values,
}
capture_events = st.fixed_dictionaries(
    {},
    optional={
        "event": event_names,
        "uuid": FIELDS["uuid"],
        "distinct_id": FIELDS["distinct_id"],
        "$distinct_id": text,
        "timestamp": timestamps(),
        "elements_chain": st.one_of(chains(), json_values),
        "elements": json_values,
        "properties": st.one_of(st.fixed_dictionaries({}, optional=CAPTURE_PROPS), json_values),
    },
)
persons = st.one_of(
    st.none(), json_values,
    st.fixed_dictionaries({"properties": st.fixed_dictionaries({}, optional={"email": text})}),
)


def decodable(value: Any) -> Any:
    """What the HTTP layer would hand over: the value after an orjson round trip."""
    return orjson.loads(orjson.dumps(value))


# --------------------------------------------------------------------------- checks

BOUNDS = {
    "event": normalize.MAX_EVENT_NAME_CHARS,
    "session_id": normalize.MAX_ID_CHARS,
    "distinct_id": normalize.MAX_ID_CHARS,
    "email": normalize.MAX_LABEL_CHARS,
    "current_url": normalize.MAX_URL_CHARS,
    "canonical_url": normalize.MAX_URL_CHARS,
    "pathname": normalize.MAX_URL_CHARS,
    "referrer": normalize.MAX_URL_CHARS,
    "element_tag": elements.MAX_NAME_CHARS,
    "element_id": normalize.MAX_ID_CHARS,
    "element_text": normalize.MAX_TEXT_CHARS,
    "input_name": normalize.MAX_ID_CHARS,
    "link_target": normalize.MAX_URL_CHARS,
    # "Rage click <label ≤200> button" and "User clicked <…> on the <page ≤200> page".
    "title": 2 * normalize.MAX_LABEL_CHARS,
    "description": 3 * normalize.MAX_LABEL_CHARS,
    "dedup_key": 2 + 100,  # "u:" + a uuid (or up to 100 characters), "h:" + 64 hex digits
}
ACTION_TYPES = {"pageview", "click", "submit", "type", "copy", "custom", "internal"}


def check_event(ev: NormalizedEvent, source: str) -> None:
    for name, bound in BOUNDS.items():
        value = getattr(ev, name)
        if value is None:
            continue
        assert isinstance(value, str), (name, value)
        assert len(value) <= bound, (name, len(value))
        assert "\x00" not in value, name  # Postgres text cannot hold NUL
    for name in ("event", "session_id", "distinct_id"):
        value = getattr(ev, name)
        assert value is None or not normalize._CONTROL.search(value), (name, value)
    assert ev.event and ev.title and ev.description
    assert ev.action_type in ACTION_TYPES
    assert ev.source == source
    assert ev.dedup_key.startswith(("u:", "h:"))
    if ev.event_uuid is not None:
        assert str(uuid.UUID(ev.event_uuid)) == ev.event_uuid
    assert ev.occurred_at.tzinfo is not None
    assert datetime(2000, 1, 1, tzinfo=UTC) <= ev.occurred_at <= RECEIVED_AT + normalize.FUTURE_CLAMP
    # The payload is storable as JSONB: serializable, and no NUL anywhere.
    dumped = orjson.dumps(ev.payload)
    assert b"\\u0000" not in dumped


def normalize_or_400(fn: Any, *args: Any, **kw: Any) -> NormalizedEvent | None:
    try:
        return fn(*args, received_at=RECEIVED_AT, **kw)
    except BadRequestError as exc:
        assert exc.status_code == 400 and exc.detail
        return None


# --------------------------------------------------------------------------- normalizer properties


@PROFILE
@given(body=webhook_bodies)
@example(body={"event": "$pageview", "timestamp": "0001-01-01T00:00:00+01:00"})
@example(body={"event": "$pageview", "timestamp": "9999-12-31T23:59:59-01:00"})
@example(body={"event": "$autocapture", "elements_chain": 'a:href="\\', "current_url": "http://[::1"})
def test_from_webhook_flat_never_raises_and_is_bounded(body: dict[str, Any]) -> None:
    ev = normalize_or_400(normalize.from_webhook, decodable(body))
    if ev is not None:
        check_event(ev, "webhook")


@PROFILE
@given(raw=json_values)
def test_from_webhook_any_json_value(raw: Any) -> None:
    ev = normalize_or_400(normalize.from_webhook, decodable(raw))
    if ev is not None:
        check_event(ev, "webhook")


@PROFILE
@given(event=capture_events, person=persons)
def test_from_webhook_stock_template_body(event: dict[str, Any], person: Any) -> None:
    ev = normalize_or_400(normalize.from_webhook, decodable({"event": event, "person": person}))
    if ev is not None:
        check_event(ev, "webhook")


@PROFILE
@given(event=st.one_of(capture_events, json_values))
@example(event={"event": "$pageview", "timestamp": "0001-01-01T00:00:00+01:00"})
def test_from_capture_never_raises_and_is_bounded(event: Any) -> None:
    ev = normalize_or_400(normalize.from_capture, decodable(event))
    if ev is not None:
        check_event(ev, "capture")


@settings(max_examples=100, deadline=None)
@given(body=st.fixed_dictionaries({"event": st.sampled_from(["$pageview", "$autocapture", "x"])},
                                  optional={k: FIELDS[k] for k in ("uuid", "timestamp", "distinct_id",
                                                                   "current_url", "extra")}),
       data=st.data())
def test_dedup_key_is_stable(body: dict[str, Any], data: st.DataObject) -> None:
    """Same payload → same key, whatever the key order; a uuid's case does not matter."""
    body = decodable(body)
    first = normalize_or_400(normalize.from_webhook, body)
    assume(first is not None)
    assert first is not None
    shuffled = dict(data.draw(st.permutations(list(body.items()))))
    again = normalize_or_400(normalize.from_webhook, shuffled)
    assert again is not None and again.dedup_key == first.dedup_key
    if first.event_uuid is not None:
        upper = normalize_or_400(normalize.from_webhook, {**body, "uuid": first.event_uuid.upper()})
        assert upper is not None and upper.dedup_key == first.dedup_key


# --------------------------------------------------------------------------- elements properties


def check_elements(els: list[elements.Element]) -> None:
    assert len(els) <= elements.MAX_ELEMENTS
    for el in els:
        assert len(el.tag) <= elements.MAX_NAME_CHARS
        assert len(el.classes) <= elements.MAX_CLASSES
        assert all(len(c) <= elements.MAX_NAME_CHARS for c in el.classes)
        assert len(el.attributes) <= elements.MAX_ATTRIBUTES
        for k, v in el.attributes.items():
            assert len(k) <= elements.MAX_KEY_CHARS and len(v) <= elements.MAX_VALUE_CHARS


def check_target(t: elements.Target) -> None:
    for name in ("tag", "element_id", "text", "input_name", "href"):
        value = getattr(t, name)
        assert value is None or (isinstance(value, str) and value and len(value) <= elements.MAX_VALUE_CHARS)
    assert t.kind in {"element", "button", "link", "input", "select", "textarea", "form", "label"}


@PROFILE
@given(chain=st.one_of(chains(), text, st.none()), el_text=st.one_of(st.none(), text))
def test_elements_parser_never_raises_and_is_bounded(chain: str | None, el_text: str | None) -> None:
    check_elements(elements.parse_elements_chain(chain))
    check_target(elements.target_from_chain(chain, el_text))


@settings(max_examples=30, deadline=None)
@given(unit=st.sampled_from(['a:href="', 'x.', ';', 'b:text="\\"', ':attr__id="', '"']),
       repeat=st.integers(1000, 30_000))
def test_elements_parser_bounded_on_huge_repetitive_chains(unit: str, repeat: int) -> None:
    chain = unit * repeat
    check_elements(elements.parse_elements_chain(chain))
    check_target(elements.target_from_chain(chain, None))


@settings(max_examples=50, deadline=None)
@given(value=st.one_of(json_values, st.binary(max_size=20)))
def test_elements_parser_tolerates_non_strings(value: Any) -> None:
    assert elements.parse_elements_chain(value) == [] or isinstance(value, str)
    check_target(elements.target_from_chain(value, value))  # type: ignore[arg-type]
