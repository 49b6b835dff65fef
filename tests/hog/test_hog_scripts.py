"""Run the tutorial's Hog script and ours on every fixture event and compare what they send.

The tutorial's four "hint" fields are shown wrong with explicit values; ours forwards the raw
chain plus uuid/$el_text/captured_at so the receiver can read element 0 itself.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import pytest

from receiver.ingest.elements import target_from_chain
from tests.hog.hogdata import destination_source, load_chains, load_events, tutorial_source
from tests.hog.hogvm import (
    FetchRequest,
    FetchResponse,
    HogRuntimeError,
    parse_program,
    request_for,
    run_script,
)

EVENTS = load_events()
CHAINS = load_chains()
BY_NAME = {event["name"]: event for event in EVENTS}

TUTORIAL_KEYS = {
    "event",
    "referrer",
    "timestamp",
    "element_id",
    "event_type",
    "session_id",
    "current_url",
    "distinct_id",
    "email",
    "elements_chain",
    "input_field_name",
    "link_destination",
    "button_or_link_text",
}
OUR_KEYS = {
    "uuid",
    "event",
    "event_type",
    "timestamp",
    "captured_at",
    "distinct_id",
    "session_id",
    "current_url",
    "referrer",
    "email",
    "elements_chain",
    "$el_text",
}
HINT_KEYS = {"element_id", "input_field_name", "link_destination", "button_or_link_text"}


def _ids(event: dict[str, Any]) -> str:
    return str(event["name"])


def _globals(name: str) -> dict[str, Any]:
    return copy.deepcopy(BY_NAME[name]["globals"])


def _tutorial_body(globals_: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = request_for(tutorial_source(), globals_).json()
    return body


def _our_body(globals_: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = request_for(destination_source(), globals_).json()
    return body


def _expected_headers(globals_: dict[str, Any]) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "x-posthog-secret": globals_["inputs"]["headers"]["x-posthog-secret"],
    }


# --------------------------------------------------------------------------------------------
# Fixtures are complete and the scripts are what we think they are
# --------------------------------------------------------------------------------------------


def test_tutorial_fixture_is_the_verbatim_step_3_script() -> None:
    # Pinned so an accidental edit cannot make the tutorial look better (or worse) than it is.
    digest = hashlib.sha256(tutorial_source().encode("utf-8")).hexdigest()
    assert digest == "a0cf8cf62d450e7e9ebac20ba69fdec66befd916edc809a6cf5f73b96e208b6d"


@pytest.mark.parametrize("source", [tutorial_source, destination_source], ids=["tutorial", "ours"])
def test_scripts_parse_with_hogql_parser(source: Any) -> None:
    assert parse_program(source())["node"] == "Program"


def test_every_corpus_chain_has_an_event() -> None:
    covered = {event["globals"]["event"]["elements_chain"] for event in EVENTS}
    assert {case["chain"] for case in CHAINS.values()} <= covered
    kinds = {event["globals"]["event"]["event"] for event in EVENTS}
    assert {"$autocapture", "$pageview"} <= kinds
    assert any(event["globals"]["event"]["elements_chain"] is None for event in EVENTS)


def test_fixture_globals_look_like_posthog() -> None:
    for event in EVENTS:
        g = event["globals"]
        assert set(g["event"]) >= {
            "uuid",
            "event",
            "distinct_id",
            "properties",
            "elements_chain",
            "timestamp",
            "captured_at",
            "url",
        }
        assert "$elements_chain" not in g["event"]["properties"]  # ingestion moves it out
        assert set(g["inputs"]) >= {"url", "headers"}
        assert g["event"]["timestamp"].endswith("Z")


# --------------------------------------------------------------------------------------------
# Both scripts on every event
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("event", EVENTS, ids=_ids)
def test_tutorial_request_shape(event: dict[str, Any]) -> None:
    g = event["globals"]
    request = request_for(tutorial_source(), g)
    assert request.url == g["inputs"]["url"]
    assert request.method == "POST"
    assert request.headers == _expected_headers(g)
    body = request.json()
    assert set(body) == TUTORIAL_KEYS
    # No uuid: two deliveries of one event cannot be told apart from two real clicks.
    assert "uuid" not in body and "$el_text" not in body and "captured_at" not in body
    # Every value defaults to '' via `??`, never null.
    assert all(value is not None for value in body.values())


@pytest.mark.parametrize("event", EVENTS, ids=_ids)
def test_tutorial_hints_match_an_independent_reading(event: dict[str, Any]) -> None:
    # posthog_events.json states what the tutorial's first-match-anywhere extraction yields,
    # computed by a separate str.find implementation; the evaluator must agree with it.
    body = _tutorial_body(event["globals"])
    assert {key: body[key] for key in HINT_KEYS} == event["tutorial"]


@pytest.mark.parametrize("event", EVENTS, ids=_ids)
def test_our_request_forwards_everything(event: dict[str, Any]) -> None:
    g = event["globals"]
    ev, props = g["event"], g["event"]["properties"]
    request = request_for(destination_source(), g)
    assert request.url == g["inputs"]["url"]
    assert request.method == "POST"
    assert request.headers == _expected_headers(g)
    body = request.json()
    assert set(body) == OUR_KEYS
    assert not HINT_KEYS & set(body)
    assert body["uuid"] == ev["uuid"]
    assert body["event"] == ev["event"]
    assert body["timestamp"] == ev["timestamp"]
    assert body["captured_at"] == ev["captured_at"]
    assert body["distinct_id"] == ev["distinct_id"]
    assert body["elements_chain"] == ev["elements_chain"]  # raw, byte for byte
    assert body["$el_text"] == props.get("$el_text")
    assert body["event_type"] == props.get("$event_type")
    assert body["session_id"] == props.get("$session_id")
    assert body["current_url"] == props.get("$current_url")
    assert body["referrer"] == props.get("$referrer")
    # Compact JSON, exactly what JSON.stringify produces for this payload.
    assert request.body == json.dumps(body, separators=(",", ":"), ensure_ascii=False)


@pytest.mark.parametrize("event", [e for e in EVENTS if e["chain_case"]], ids=_ids)
def test_our_body_is_enough_to_recover_the_target(event: dict[str, Any]) -> None:
    body = _our_body(event["globals"])
    case = CHAINS[event["chain_case"]]
    target = target_from_chain(body["elements_chain"], body["$el_text"])
    assert {k: getattr(target, k) for k in case["expected"]} == case["expected"]


# --------------------------------------------------------------------------------------------
# Where the tutorial's extraction is wrong, value by value
# --------------------------------------------------------------------------------------------

# (event, tutorial field, what the tutorial sends, Target field, the right value)
TUTORIAL_WRONG = [
    ("nav_link", "element_id", "sidebar", "element_id", None),
    ("mui_span_in_button", "element_id", "team-page", "element_id", None),
    ("input_change", "element_id", "invite-form", "element_id", None),
    ("svg_path_in_icon_button", "element_id", "close-share", "element_id", None),
    ("nested_spans_role_button", "element_id", "workspace-switcher", "element_id", None),
    ("span_in_link", "element_id", "docs-card", "element_id", None),
    ("input_type_submit", "element_id", "signin-form", "element_id", None),
    ("role_select", "element_id", "members-table", "element_id", None),
    ("button_in_link", "element_id", "project-42", "element_id", None),
    ("pointer_div_card", "element_id", "reports", "element_id", None),
    ("button_in_form", "input_field_name", "settings", "input_name", None),
    ("input_type_submit", "input_field_name", "signin", "input_name", None),
    ("label_click", "input_field_name", "signin", "input_name", None),
    ("input_change", "button_or_link_text", "Email", "text", None),
    ("escaped_quotes", "button_or_link_text", "Say \\", "text", 'Say "hi" to Bob'),
    ("data_context_attribute", "button_or_link_text", "row-menu", "text", "Delete"),
    ("data_tooltip_text", "button_or_link_text", "Download all rows as CSV", "text", "Export"),
    ("svg_path_in_icon_button", "button_or_link_text", "", "text", "Close dialog"),
    ("input_type_submit", "button_or_link_text", "", "text", "Sign in"),
    (
        "href_with_semicolon_and_quotes",
        "link_destination",
        "https://docs.example.com/a;b?x=\\",
        "href",
        'https://docs.example.com/a;b?x="1"',
    ),
]


@pytest.mark.parametrize(
    ("name", "field", "tutorial_value", "target_field", "right"),
    TUTORIAL_WRONG,
    ids=[f"{row[0]}-{row[1]}" for row in TUTORIAL_WRONG],
)
def test_tutorial_extraction_is_wrong(
    name: str, field: str, tutorial_value: str, target_field: str, right: str | None
) -> None:
    tutorial = _tutorial_body(_globals(name))
    assert tutorial[field] == tutorial_value
    ours = _our_body(_globals(name))
    target = target_from_chain(ours["elements_chain"], ours["$el_text"])
    assert getattr(target, target_field) == right
    assert (right or "") != tutorial_value


def test_tutorial_is_wrong_on_most_of_the_corpus() -> None:
    wrong = set()
    for event in EVENTS:
        if not event["chain_case"] or event["name"] != event["chain_case"]:
            continue
        case = CHAINS[event["chain_case"]]
        tutorial = _tutorial_body(event["globals"])
        right = case["expected"]
        pairs = [
            ("element_id", "element_id"),
            ("input_field_name", "input_name"),
            ("link_destination", "href"),
            ("button_or_link_text", "text"),
        ]
        if any((right[r] or "") != tutorial[t] for t, r in pairs):
            wrong.add(case["name"])
    assert len(wrong) >= 15, sorted(wrong)


# --------------------------------------------------------------------------------------------
# Status handling
# --------------------------------------------------------------------------------------------

STATUSES = [200, 201, 202, 204, 301, 302, 307, 308, 400, 401, 404, 408, 413, 429, 500, 503]


@pytest.mark.parametrize("status", STATUSES)
def test_non_2xx_handling(status: int) -> None:
    def answer(_request: FetchRequest) -> FetchResponse:
        return FetchResponse(status=status, body={"detail": "nope"})

    g = _globals("button_in_form")
    ours = run_script(destination_source(), g, fetch=answer)
    tutorial = run_script(tutorial_source(), g, fetch=answer)
    assert len(ours.fetches) == len(tutorial.fetches) == 1

    ok = 200 <= status < 300
    assert (ours.error is None) is ok
    # The tutorial only checks >= 400: a redirect is neither retried by PostHog nor logged by
    # the script, so the event disappears without a trace.
    assert (tutorial.error is None) is (status < 400)
    if not ok:
        assert ours.error is not None
        assert ours.error.type == "Error"
        # f-strings are concat(): a dict body prints Hog-style, not as JSON.
        assert ours.error.message == f"Webhook returned {status}: {{'detail': 'nope'}}"


def test_text_error_body_in_message() -> None:
    def answer(_request: FetchRequest) -> FetchResponse:
        return FetchResponse(status=502, body="Bad gateway")

    execution = run_script(destination_source(), _globals("nav_link"), fetch=answer)
    assert execution.error is not None
    assert execution.error.message == "Webhook returned 502: Bad gateway"


# --------------------------------------------------------------------------------------------
# Secret, URL, email and missing values
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, None, {"x-posthog-secret": ""}, {"Content-Type": "x"}])
def test_missing_secret(headers: dict[str, str] | None) -> None:
    g = _globals("button_in_form")
    g["inputs"]["headers"] = headers
    # Tutorial: the header is null, PostHog drops non-string headers, the receiver sees none.
    tutorial = run_script(tutorial_source(), g)
    assert tutorial.error is None
    assert not tutorial.request.headers.get("x-posthog-secret")
    # Ours: no request at all, and a log line that says what to fix.
    ours = run_script(destination_source(), g)
    assert ours.fetches == []
    assert ours.error is not None
    assert "x-posthog-secret" in ours.error.message


@pytest.mark.parametrize("url", ["", None])
def test_missing_url(url: str | None) -> None:
    g = _globals("button_in_form")
    g["inputs"]["url"] = url
    ours = run_script(destination_source(), g)
    assert ours.fetches == []
    assert ours.error is not None
    assert "Webhook URL" in ours.error.message
    with pytest.raises(HogRuntimeError, match="fetch: invalid URL"):
        run_script(tutorial_source(), g)


def test_email_falls_back_to_person() -> None:
    g = _globals("identified_without_email_property")
    assert "email" not in g["event"]["properties"]
    assert _our_body(g)["email"] == g["person"]["properties"]["email"]
    assert _tutorial_body(g)["email"] == ""


def test_email_super_property_wins_over_person() -> None:
    g = _globals("button_in_form")
    g["person"]["properties"]["email"] = "old@acme.example"
    assert _our_body(g)["email"] == g["event"]["properties"]["email"]


def test_anonymous_event_never_reads_the_missing_person_global() -> None:
    g = _globals("anonymous_click")
    assert "person" not in g
    assert g["event"]["properties"]["$process_person_profile"] is False
    body = _our_body(g)
    assert body["email"] is None
    assert body["distinct_id"] == g["event"]["distinct_id"]


def test_reading_an_absent_person_global_would_abort() -> None:
    # Why the script guards on $process_person_profile: the VM fails the whole invocation when a
    # global is missing, and Hog's catch cannot intercept that.
    g = _globals("anonymous_click")
    g["event"]["properties"]["$process_person_profile"] = True
    with pytest.raises(HogRuntimeError, match="Global variable not found: person"):
        run_script(destination_source(), g)


def test_person_present_but_null() -> None:
    g = _globals("identified_without_email_property")
    g["person"] = None
    assert _our_body(g)["email"] is None


@pytest.mark.parametrize("name", ["pageview", "custom_null_chain"])
def test_missing_values_are_null_not_empty(name: str) -> None:
    g = _globals(name)
    ours = _our_body(g)
    assert ours["elements_chain"] == g["event"]["elements_chain"]  # "" or None, as given
    assert ours["$el_text"] is None
    assert ours["event_type"] is None
    tutorial = _tutorial_body(g)
    assert tutorial["elements_chain"] == ""
    assert tutorial["event_type"] == ""
    assert all(tutorial[key] == "" for key in HINT_KEYS)


def test_missing_optional_event_fields() -> None:
    # "Test function" sample events can lack captured_at, uuid and most properties.
    g = _globals("pageview")
    del g["event"]["captured_at"]
    del g["event"]["uuid"]
    g["event"]["properties"] = {}
    body = _our_body(g)
    assert body["uuid"] is None
    assert body["captured_at"] is None
    # No $process_person_profile means person processing was on, so person is consulted.
    assert body["email"] == g["person"]["properties"]["email"]


def test_properties_null() -> None:
    g = _globals("pageview")
    g["event"]["properties"] = None
    assert _our_body(g)["session_id"] is None
    assert _tutorial_body(g)["session_id"] == ""


def test_unicode_and_long_values_survive() -> None:
    g = _globals("button_in_form")
    g["event"]["properties"]["$el_text"] = "Speichern 💾 — “quoted”"
    g["event"]["elements_chain"] = 'button:text="' + "x" * 5000 + ' 💾";body:nth-child="1"'
    body = _our_body(g)
    assert body["$el_text"] == "Speichern 💾 — “quoted”"
    assert body["elements_chain"] == g["event"]["elements_chain"]


def test_each_script_makes_exactly_one_fetch() -> None:
    # PostHog issue #35400: a second fetch silently stops the function.
    for event in EVENTS:
        assert len(run_script(destination_source(), event["globals"]).fetches) == 1
        assert len(run_script(tutorial_source(), event["globals"]).fetches) == 1
