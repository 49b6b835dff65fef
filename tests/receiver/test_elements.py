"""receiver.ingest.elements: corpus of realistic chains plus property tests on hostile input."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver.ingest.elements import (
    MAX_ATTRIBUTES,
    MAX_CHAIN_CHARS,
    MAX_CLASSES,
    MAX_ELEMENTS,
    MAX_KEY_CHARS,
    MAX_NAME_CHARS,
    MAX_VALUE_CHARS,
    Element,
    Target,
    parse_elements_chain,
    target_from_chain,
)

CORPUS_PATH = Path(__file__).resolve().parents[1] / "data" / "elements_chains.json"
CORPUS: list[dict[str, Any]] = json.loads(CORPUS_PATH.read_text(encoding="utf-8"))
TARGET_FIELDS = ("tag", "element_id", "text", "href", "input_name", "kind")


def _ids(case: dict[str, Any]) -> str:
    return str(case["name"])


# --------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------


def test_corpus_covers_the_required_cases() -> None:
    names = {case["name"] for case in CORPUS}
    assert len(CORPUS) >= 14
    assert len(names) == len(CORPUS)
    required = {
        "svg_path_in_icon_button",
        "data_tooltip_text",
        "nested_spans_role_button",
        "span_in_link",
        "input_type_submit",
        "select_country",
        "tailwind_classes_with_dots",
        "mui_invite_member_button",
        "role_select",
        "button_in_link",
    }
    assert required <= names
    # Every chain quoted in posthog.md §1.4 is in the corpus verbatim.
    assert sum(1 for case in CORPUS if case["source"] == "posthog.md §1.4") == 9


@pytest.mark.parametrize("case", CORPUS, ids=_ids)
def test_corpus_target_without_el_text(case: dict[str, Any]) -> None:
    target = target_from_chain(case["chain"])
    assert {f: getattr(target, f) for f in TARGET_FIELDS} == case["expected"]


@pytest.mark.parametrize("case", [c for c in CORPUS if c.get("el_text")], ids=_ids)
def test_corpus_target_with_posthog_el_text(case: dict[str, Any]) -> None:
    # $el_text is posthog's own clean text of element 0; our corpus is consistent with it, so
    # passing it must not change the answer.
    assert target_from_chain(case["chain"], case["el_text"]).text == case["expected"]["text"]


@pytest.mark.parametrize("case", CORPUS, ids=_ids)
def test_corpus_element_count_and_classes(case: dict[str, Any]) -> None:
    elements = parse_elements_chain(case["chain"])
    assert len(elements) == case["element_count"]
    assert elements[-1].tag == "body"
    if "expected_classes" in case:
        assert list(elements[0].classes) == case["expected_classes"]


def _case(name: str) -> dict[str, Any]:
    return next(case for case in CORPUS if case["name"] == name)


def test_escaped_quotes_are_unescaped_in_every_attribute() -> None:
    first = parse_elements_chain(_case("escaped_quotes")["chain"])[0]
    assert first.attributes["attr__title"] == 'Click "here"'
    assert first.text == 'Say "hi" to Bob'
    assert first.element_id == "greet"


def test_semicolon_inside_quoted_value_does_not_split_elements() -> None:
    elements = parse_elements_chain(_case("href_with_semicolon_and_quotes")["chain"])
    assert [el.tag for el in elements] == ["a", "body"]
    assert elements[0].href == 'https://docs.example.com/a;b?x="1"'
    assert elements[0].attributes["attr__href"] == 'https://docs.example.com/a;b?x="1"'


def test_trailing_backslash_is_recovered_best_effort() -> None:
    elements = parse_elements_chain(_case("tailwind_trailing_backslash")["chain"])
    assert [el.tag for el in elements] == ["button", "body"]
    assert elements[0].text == "Path C:\\"
    assert elements[1].attributes == {"nth-child": "2", "nth-of-type": "1"}


def test_trailing_backslash_on_a_non_last_key() -> None:
    chain = 'a:attr__title="C:\\"href="/x"text="Go";body:nth-child="1"'
    elements = parse_elements_chain(chain)
    assert [el.tag for el in elements] == ["a", "body"]
    assert elements[0].attributes == {"attr__title": "C:\\", "href": "/x", "text": "Go"}


def test_backslash_not_before_a_quote_is_literal() -> None:
    chain = 'span:text="a\\nb \\\\ c";body:nth-child="1"'
    assert parse_elements_chain(chain)[0].text == "a\\nb \\\\ c"


def test_tag_is_not_split_at_a_tailwind_or_mui_colon() -> None:
    tw = parse_elements_chain(_case("tailwind_classes_with_dots")["chain"])
    assert tw[0].tag == "button"
    assert tw[1].classes == ("flex", "items-center", "justify-between", "md:[&>*]:gap-4")
    mui = parse_elements_chain(_case("mui_invite_member_button")["chain"])
    assert mui[0].element_id == ":r1f:"
    assert mui[2].attributes["attr__aria-labelledby"] == ":r1c:"


def test_posthog_fallback_split_for_unknown_first_key() -> None:
    elements = parse_elements_chain('div.hover:x:data-foo="1"')
    assert elements == [Element(tag="div", classes=("hover:x",), attributes={"data-foo": "1"})]


def test_dotted_classes_used_when_no_class_attribute() -> None:
    (el,) = parse_elements_chain('BUTTON.b.a:nth-child="1"')
    assert el.tag == "button"
    assert el.classes == ("b", "a")


def test_element_properties() -> None:
    el = Element(
        tag="a",
        classes=(),
        attributes={
            "attr_id": "x",
            "attr__href": "/h",
            "attr__name": "n",
            "attr__aria-label": "L",
            "text": "T",
        },
    )
    assert (el.element_id, el.href, el.name, el.aria_label, el.text) == ("x", "/h", "n", "L", "T")
    assert hash(el) == hash(Element(tag="a", classes=(), attributes={}))


def test_element_id_prefers_raw_attribute() -> None:
    el = Element(tag="b", classes=(), attributes={"attr__id": "raw", "attr_id": "copy"})
    assert el.element_id == "raw"


def test_href_prefers_href_key_over_attr_href() -> None:
    el = Element(tag="a", classes=(), attributes={"attr__href": "/raw", "href": "/resolved"})
    assert el.href == "/resolved"


# --------------------------------------------------------------------------------------------
# Target rules
# --------------------------------------------------------------------------------------------


def test_el_text_wins_and_is_whitespace_collapsed() -> None:
    target = target_from_chain(_case("button_in_form")["chain"], "  Save \n\t changes ")
    assert target.text == "Save changes"


def test_blank_el_text_falls_back_to_chain() -> None:
    assert target_from_chain(_case("button_in_form")["chain"], " \n ").text == "Save"


def test_element_text_is_whitespace_collapsed() -> None:
    assert target_from_chain('button:text="  Save\u00a0  now "').text == "Save now"


def test_title_is_the_last_resort_label() -> None:
    chain = 'svg:nth-child="1";button:attr__title="Refresh"nth-child="1";body:nth-child="1"'
    target = target_from_chain(chain)
    assert (target.tag, target.text, target.kind) == ("svg", "Refresh", "button")


def test_id_and_name_never_come_from_ancestors() -> None:
    target = target_from_chain(_case("input_type_submit")["chain"])
    assert target.element_id is None
    assert target.input_name is None


def test_role_link_counts_as_link() -> None:
    chain = 'span:text="Next";div:attr__role="link"nth-child="1";body:nth-child="1"'
    assert target_from_chain(chain).kind == "link"


@pytest.mark.parametrize(
    ("input_type", "kind"),
    [
        ("submit", "button"),
        ("BUTTON", "button"),
        ("reset", "button"),
        ("text", "input"),
        ("", "input"),
    ],
)
def test_input_kind_depends_on_type(input_type: str, kind: str) -> None:
    chain = f'input:attr__type="{input_type}"nth-child="1";body:nth-child="1"'
    assert target_from_chain(chain).kind == kind


@pytest.mark.parametrize("chain", [None, "", ";;;", '"', "\\", ":", '=";'])
def test_degenerate_chains(chain: str | None) -> None:
    assert target_from_chain(chain) == Target(None, None, None, None, None, "element")


def test_no_chain_but_el_text() -> None:
    assert target_from_chain(None, "Hello").text == "Hello"


def test_non_string_input_is_tolerated() -> None:
    assert parse_elements_chain(b'a:text="x"') == []  # type: ignore[arg-type]
    assert target_from_chain(42, 7).kind == "element"  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Bounds
# --------------------------------------------------------------------------------------------


def _assert_bounded(elements: list[Element]) -> None:
    assert len(elements) <= MAX_ELEMENTS
    for el in elements:
        assert len(el.tag) <= MAX_NAME_CHARS
        assert len(el.classes) <= MAX_CLASSES
        assert all(len(c) <= MAX_NAME_CHARS for c in el.classes)
        assert len(el.attributes) <= MAX_ATTRIBUTES
        for key, value in el.attributes.items():
            assert len(key) <= MAX_KEY_CHARS
            assert len(value) <= MAX_VALUE_CHARS


def _assert_target_bounded(target: Target) -> None:
    for value in (target.tag, target.element_id, target.text, target.input_name, target.href):
        assert value is None or len(value) <= MAX_VALUE_CHARS
    assert target.kind in {
        "button",
        "link",
        "input",
        "select",
        "textarea",
        "form",
        "label",
        "element",
    }


HOSTILE = [
    ";" * 200_000,
    '"' * 200_000,
    "\\" * 200_000,
    ":" * 200_000,
    'a="' * 100_000,
    'span:text="' + "x" * 200_000 + '"',
    'span:text="' + '\\"' * 100_000,
    "div." + "c." * 100_000 + ':nth-child="1"',
    "div:" + "".join(f'attr__k{i}="v"' for i in range(5_000)),
    'div:nth-child="1";' * 10_000,
    "x" * 200_000,
    ":attr__" * 50_000,
    'b:t="\\";' * 50_000,
]


@pytest.mark.parametrize("chain", HOSTILE, ids=lambda c: repr(c[:12]))
def test_hostile_inputs_are_bounded_and_fast(chain: str) -> None:
    started = time.perf_counter()
    elements = parse_elements_chain(chain)
    target = target_from_chain(chain, chain)
    elapsed = time.perf_counter() - started
    _assert_bounded(elements)
    _assert_target_bounded(target)
    # Input is truncated to MAX_CHAIN_CHARS before parsing, so even a quadratic slip would show.
    assert elapsed < 1.0


def test_value_truncated() -> None:
    (el,) = parse_elements_chain('span:text="' + "y" * 10_000 + '"nth-child="1"')
    assert el.text == "y" * MAX_VALUE_CHARS
    assert el.attributes["nth-child"] == "1"


def test_input_truncated_before_parsing() -> None:
    chain = 'span:text="' + "z" * (MAX_CHAIN_CHARS + 10) + '";body:nth-child="1"'
    elements = parse_elements_chain(chain)
    assert [el.tag for el in elements] == ["span"]


def test_element_count_capped() -> None:
    elements = parse_elements_chain('div:nth-child="1";' * (MAX_ELEMENTS + 10))
    assert len(elements) == MAX_ELEMENTS


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------

_TAGS = st.sampled_from(
    [
        "a",
        "button",
        "span",
        "div",
        "svg",
        "path",
        "input",
        "select",
        "form",
        "label",
        "li",
        "my-widget",
        "h1",
    ]
)
# Class names never contain `"` (posthog strips it), whitespace, or `=`/`_` (which would make a
# Tailwind-ish class indistinguishable from an attribute key); `.` is excluded here because the
# dotted form is inherently ambiguous and attr__class is tested separately.
_CLASS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-:[]&>*/%", min_size=1, max_size=20)
_ATTR_NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-:@.", min_size=1, max_size=15)
_KEY = st.one_of(
    st.sampled_from(["attr_id", "href", "nth-child", "nth-of-type", "text"]),
    _ATTR_NAME.map(lambda n: f"attr__{n}"),
)
_VALUE = st.text(max_size=60).filter(lambda v: '\\"' not in v and not v.endswith("\\"))


@st.composite
def _elements(draw: st.DrawFn) -> list[Element]:
    count = draw(st.integers(min_value=1, max_value=8))
    result = []
    for _ in range(count):
        attributes = draw(st.dictionaries(_KEY, _VALUE, min_size=1, max_size=6))
        result.append(
            Element(
                tag=draw(_TAGS),
                classes=tuple(draw(st.lists(_CLASS, max_size=4))),
                attributes=attributes,
            )
        )
    return result


def _serialize(elements: list[Element]) -> str:
    """Re-implementation of posthog-js getElementsChainString's escaping, for round trips."""

    def esc(s: str) -> str:
        return s.replace('\\"', '"').replace('"', '\\"')

    out = []
    for el in elements:
        head = el.tag + "".join(f".{c}" for c in el.classes)
        attrs = "".join(f'{esc(k)}="{esc(v)}"' for k, v in el.attributes.items())
        out.append(f"{head}:{attrs}")
    return ";".join(out)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(_elements())
def test_grammar_round_trip(elements: list[Element]) -> None:
    parsed = parse_elements_chain(_serialize(elements))
    assert [(e.tag, e.attributes) for e in parsed] == [(e.tag, e.attributes) for e in elements]
    for got, want in zip(parsed, elements, strict=True):
        if "attr__class" not in want.attributes:
            assert got.classes == want.classes


_CHAIN_NOISE = st.text(alphabet='abc:;."=\\_- \n', max_size=200)


@settings(max_examples=300)
@given(st.one_of(st.text(max_size=500), _CHAIN_NOISE, _elements().map(_serialize)))
def test_never_raises_and_bounded(chain: str) -> None:
    _assert_bounded(parse_elements_chain(chain))
    _assert_target_bounded(target_from_chain(chain))


@settings(max_examples=200)
@given(_elements().map(_serialize), st.integers(min_value=0, max_value=400), _CHAIN_NOISE)
def test_corrupted_grammar_chains_never_raise(chain: str, cut: int, noise: str) -> None:
    mangled = chain[:cut] + noise + chain[cut:]
    _assert_bounded(parse_elements_chain(mangled))
    _assert_target_bounded(target_from_chain(mangled, noise))


@settings(max_examples=100)
@given(st.lists(st.sampled_from(CORPUS), min_size=1, max_size=3), st.text(max_size=50))
def test_target_with_any_el_text(cases: list[dict[str, Any]], el_text: str) -> None:
    chain = ";".join(case["chain"] for case in cases)
    target = target_from_chain(chain, el_text)
    _assert_target_bounded(target)
    assert target.tag == cases[0]["expected"]["tag"]


def test_lone_surrogates_and_nul() -> None:
    chain = 'span:text="\ud800\x00";body:nth-child="1"'
    assert parse_elements_chain(chain)[0].text == "\ud800\x00"
