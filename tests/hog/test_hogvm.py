"""The evaluator's own semantics: STL edge cases, JS value rules, and loud failures."""

from __future__ import annotations

from typing import Any

import pytest

from tests.hog.hogvm import (
    FetchRequest,
    FetchResponse,
    HogErrorValue,
    HogRuntimeError,
    UnsupportedHogError,
    parse_program,
    response_from_http,
    run_script,
)

# Arrays reach the scripts only through globals (neither script has an array literal).
LISTS = {"event": {"items": [1, 2], "none": [], "mixed": ["x", None, {"k": 1.5}], "float": 2.0}}


def _eval(expression: str, globals_: dict[str, Any] | None = None) -> Any:
    execution = run_script(f"return {expression}", LISTS if globals_ is None else globals_)
    assert execution.error is None
    return execution.result


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("position('abc', 'c')", 3),
        ("position('abc', 'x')", 0),
        ("position('abc', '')", 1),
        ("position(null, 'a')", 0),
        ("position('a null b', null)", 3),  # the needle goes through String(): 'null'
        ("substring('hello', 2, 3)", "ell"),
        ("substring('hello', 2)", "ello"),
        ("substring('hello', 0, 2)", ""),
        ("substring('hello', 6, 1)", ""),
        ("substring('hello', 4, 100)", "lo"),
        ("substring('hello', 2, -1)", ""),
        ("substring(null, 1, 1)", ""),
        ("length('héllo')", 5),
        ("length('😀')", 2),  # UTF-16 code units, as in JavaScript
        ("position('😀a', 'a')", 3),
        ("substring('😀a', 3, 1)", "a"),
        ("length(event.items)", 2),
        ("empty(null)", True),
        ("empty('')", True),
        ("empty('x')", False),
        ("empty(0)", False),
        ("empty({})", True),
        ("empty(event.none)", True),
        ("empty(event.items)", False),
        ("concat('a', null, 1, true)", "a1true"),
        ("concat({'detail': 'bad'})", "{'detail': 'bad'}"),
        ("concat(event.mixed)", "['x', null, {'k': 1.5}]"),
        ("concat(1.5)", "1.5"),
        ("jsonStringify({'a': event.mixed, 'b': true})", '{"a":["x",null,{"k":1.5}],"b":true}'),
        ("jsonStringify(event.float)", "2"),  # JSON.stringify(2.0) is "2"
        ("jsonStringify({'q': 'say \"hi\"\\n'})", '{"q":"say \\"hi\\"\\n"}'),
        ("null ?? 'x'", "x"),
        ("'' ?? 'x'", ""),
        ("1 + 2 - 4", -1),
        ("'3' + 1", 4),  # arithmetic coerces with Number()
        ("null < 1", True),  # JavaScript: null becomes 0
        ("'10' > 9", True),  # number-vs-string comparisons compare as numbers
        ("1 == '1'", True),
        ("null == false", False),
        ("true == 1", True),
        ("1 < 2 and 2 < 1", False),
        ("1 < 2 or 2 < 1", True),
    ],
)
def test_expression(expression: str, expected: Any) -> None:
    result = _eval(expression)
    assert result == expected
    assert type(result) is type(expected)


def test_ifnull_short_circuits() -> None:
    assert _eval("'a' ?? missing_global") == "a"
    with pytest.raises(HogRuntimeError, match="Global variable not found: missing_global"):
        _eval("null ?? missing_global")


def test_nested_global_access_is_nullish() -> None:
    g = {"event": {"properties": {"a": {"b": 1}}}}
    assert _eval("event.properties.a.b", g) == 1
    assert _eval("event.properties.x.y", g) is None
    assert _eval("event.properties?.a?.b", g) == 1
    assert _eval("event['properties']['a']", g) == {"b": 1}
    assert _eval("event.properties.a.b.c", g) is None  # property of a number is null


def test_object_truthiness_is_javascript() -> None:
    execution = run_script("if ({}) { return 'truthy' } return 'falsy'", {})
    assert execution.result == "truthy"
    execution = run_script("if ('') { return 'truthy' } return 'falsy'", {})
    assert execution.result == "falsy"


def test_functions_scopes_and_assignment() -> None:
    source = """
        let total := 1
        fun add(a, b) {
            let inner := a + b
            return inner
        }
        total := add(total, 2)
        if (true) {
            let total2 := 10
            total := total + total2
        }
        return total
    """
    assert run_script(source, {}).result == 13


def test_catch_sees_hog_throw_only() -> None:
    source = "try { throw Error('boom', {'k': 1}) } catch (e) { return concat('caught ', e) }"
    assert run_script(source, {}).result == "caught Error('boom', {'k': 1})"
    with pytest.raises(HogRuntimeError, match="TypeError"):
        run_script("try { return length(null) } catch (e) { return 'caught' }", {})


def test_finally_runs() -> None:
    source = """
        let log := 'a'
        try { log := concat(log, 'b') } catch (e) { log := 'no' } finally { log := concat(log, 'c') }
        return log
    """
    assert run_script(source, {}).result == "abc"


def test_typed_catch_lets_other_types_through() -> None:
    source = "try { throw Error('x') } catch (e: RetryError) { return 'wrong' }"
    execution = run_script(source, {})
    assert execution.error == HogErrorValue(type="Error", message="x")


def test_uncaught_throw_is_reported_not_raised() -> None:
    execution = run_script("throw Error(f'code {1 + 1}')", {})
    assert execution.error == HogErrorValue(type="Error", message="code 2")
    assert execution.fetches == []


def test_throw_of_non_error_fails() -> None:
    with pytest.raises(HogRuntimeError, match="can only throw"):
        run_script("throw 'x'", {})


# --------------------------------------------------------------------------------------------
# fetch follows PostHog's request rules
# --------------------------------------------------------------------------------------------


def test_fetch_drops_non_string_headers_and_encodes_dict_bodies() -> None:
    seen: list[FetchRequest] = []

    def answer(request: FetchRequest) -> FetchResponse:
        seen.append(request)
        return FetchResponse(status=201, body={"ok": True})

    source = """
        let res := fetch('https://r.example/h', {
            'method': 'put',
            'headers': {'a': 'x', 'b': null, 'c': 3},
            'body': {'k': event.items, 'u': '😀'}
        })
        return res
    """
    execution = run_script(source, LISTS, fetch=answer)
    assert execution.result == {"status": 201, "body": {"ok": True}}
    assert seen == execution.fetches
    request = execution.request
    assert request.method == "PUT"
    assert request.headers == {"a": "x"}
    assert request.body == '{"k":[1,2],"u":"😀"}'


def test_fetch_defaults() -> None:
    execution = run_script("let r := fetch('https://r.example/h')", {})
    assert execution.fetches == [
        FetchRequest(
            url="https://r.example/h",
            method="POST",
            headers={"Content-Type": "application/json"},
            body=None,
        )
    ]
    execution = run_script("let r := fetch('https://r.example/h', {'method': 'GET', 'body': 'x'})", {})
    assert execution.request.body is None


def test_response_from_http_parses_json_like_posthog() -> None:
    assert response_from_http(200, '{"a": 1}') == FetchResponse(200, {"a": 1})
    assert response_from_http(502, "Bad gateway") == FetchResponse(502, "Bad gateway")


def test_globals_are_copied() -> None:
    g = {"event": {"properties": {"a": 1}}}
    run_script("let p := event.properties", g)
    assert g == {"event": {"properties": {"a": 1}}}


# --------------------------------------------------------------------------------------------
# Loud failures
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "return 2 * 3",
        "return lower('A')",
        "for (let i := 0; i < 2; i := i + 1) { print(i) }",
        "let a := [1]\na[1] := 2",
        "return x -> x",
        "return 1 in [1]",
        "print('x')",
        "return [1, 2]",
    ],
)
def test_unsupported_constructs_fail_loudly(source: str) -> None:
    with pytest.raises(UnsupportedHogError):
        run_script(source, {})


def test_parse_error() -> None:
    with pytest.raises(SyntaxError):
        parse_program("let x := ")


def test_arrays_start_at_one() -> None:
    assert _eval("event.items[1]") == 1
    assert _eval("event.items[-1]") == 2
    assert _eval("event.items[3]") is None
    with pytest.raises(HogRuntimeError, match="index 1"):
        _eval("event.items[0]")
