"""A small tree-walking evaluator for the Hog subset our PostHog destination scripts use.

Why this exists: PostHog's Hog -> bytecode compiler is not packaged outside the monorepo (it
needs Django), but its parser is (``hogql-parser`` on PyPI). So tests parse the real script
text to PostHog's JSON AST and walk it here, with a mocked ``fetch``. That lets tests assert on
the exact request PostHog would send for a given event, and lets a later test send that request
to a real receiver (pass ``fetch=`` a handler that does the HTTP call).

Fidelity rules, taken from PostHog's TypeScript VM and STL (our own re-implementation):

* Strings are measured and indexed in UTF-16 code units, as in JavaScript.
* ``position`` is 1-based and 0 when absent; ``substring`` is 1-based and '' out of range;
  ``length(null)`` is a runtime error; ``empty`` is true for null, '', [] and {}.
* ``concat`` prints non-strings with Hog's printer (``{'a': 1}``, not JSON) and null as ''.
* ``??`` / ``ifNull`` short-circuit; ``and`` / ``or`` evaluate every operand (the VM does).
* Truthiness and comparisons follow JavaScript (``{}`` is truthy, ``null < 1`` is true).
* Reading a global that is not in the globals dict is a runtime error, as in the VM.
* ``catch`` only catches Hog ``throw``; runtime errors (:class:`HogRuntimeError`) escape it and
  fail the invocation, exactly as STL exceptions do in PostHog.
* ``fetch`` applies PostHog's request rules: default method POST, only string-valued headers
  are sent, a non-string body is JSON-encoded, GET/HEAD send no body.

Anything outside the subset (an unknown node type, function, operator or call option) raises
:class:`UnsupportedHogError`, so a changed script cannot pass by being half-evaluated.
"""

from __future__ import annotations

import json
import math
import re
import sys
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = [
    "Execution",
    "FetchHandler",
    "FetchRequest",
    "FetchResponse",
    "HogErrorValue",
    "HogRuntimeError",
    "UnsupportedHogError",
    "parse_program",
    "request_for",
    "response_from_http",
    "run_script",
]

JsonValue = Any


# --------------------------------------------------------------------------------------------
# Public types
# --------------------------------------------------------------------------------------------


class HogRuntimeError(Exception):
    """A VM or STL failure. Hog ``catch`` cannot see it; PostHog fails the invocation."""


class UnsupportedHogError(HogRuntimeError):
    """The script uses something this evaluator does not implement."""


@dataclass(frozen=True, slots=True)
class HogErrorValue:
    """The value ``Error(message, payload)`` returns, and what ``throw`` carries."""

    type: str
    message: str
    payload: JsonValue = None


@dataclass(frozen=True, slots=True)
class FetchRequest:
    """What PostHog would put on the wire for one ``fetch`` call."""

    url: str
    method: str
    headers: dict[str, str]
    body: str | None

    def json(self) -> JsonValue:
        if self.body is None:
            raise ValueError("request has no body")
        return json.loads(self.body)


@dataclass(frozen=True, slots=True)
class FetchResponse:
    """What Hog sees from ``fetch``: status and the body (parsed JSON, else text)."""

    status: int
    body: JsonValue = field(default_factory=dict)


FetchHandler = Callable[[FetchRequest], FetchResponse]


@dataclass(slots=True)
class Execution:
    """Outcome of one invocation: every fetch made, an uncaught Hog ``throw`` if any, and the
    value of a top-level ``return`` (the VM's result)."""

    fetches: list[FetchRequest]
    error: HogErrorValue | None
    result: JsonValue = None

    @property
    def request(self) -> FetchRequest:
        if len(self.fetches) != 1:
            raise AssertionError(f"expected exactly one fetch, got {len(self.fetches)}")
        return self.fetches[0]


def response_from_http(status: int, text: str) -> FetchResponse:
    """Build what PostHog's fetch hands back to Hog for a real HTTP answer."""
    try:
        body: JsonValue = json.loads(text)
    except ValueError:
        body = text
    return FetchResponse(status=status, body=body)


def _ok(_request: FetchRequest) -> FetchResponse:
    return FetchResponse(status=200, body={"status": "ok"})


def run_script(
    source: str,
    globals_: Mapping[str, JsonValue],
    *,
    fetch: FetchHandler | None = None,
) -> Execution:
    """Run a Hog program against destination globals (``event``, ``person``, ``inputs``, ...).

    The globals are deep-copied through JSON first, the way PostHog hands them to the VM, so a
    script cannot mutate the caller's fixture and non-JSON values are rejected early.
    """
    program = parse_program(source)
    copied = json.loads(json.dumps(dict(globals_)))
    interpreter = _Interpreter(copied, fetch or _ok)
    try:
        result = interpreter.run(program)
    except _Throw as thrown:
        return Execution(fetches=interpreter.fetches, error=thrown.value)
    return Execution(fetches=interpreter.fetches, error=None, result=result)


def request_for(source: str, globals_: Mapping[str, JsonValue]) -> FetchRequest:
    """The single request a script makes for these globals, with the receiver answering 200."""
    execution = run_script(source, globals_)
    if execution.error is not None:
        raise AssertionError(f"script threw {execution.error}")
    return execution.request


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


def _import_parser() -> Any:
    # hogql_parser imports posthog.hogql.errors at load time. Register empty stand-ins (without
    # clobbering a real `posthog` package, e.g. the analytics SDK) so the C extension loads.
    for name in ("posthog", "posthog.hogql", "posthog.hogql.errors"):
        sys.modules.setdefault(name, types.ModuleType(name))
    import hogql_parser

    return hogql_parser


@lru_cache(maxsize=32)
def _parse_cached(source: str) -> str:
    return str(_import_parser().parse_program_json(source, is_internal=True))


def parse_program(source: str | Path) -> dict[str, Any]:
    """Parse Hog source (or a path to it) into PostHog's JSON AST; raise on syntax errors."""
    text = source.read_text(encoding="utf-8") if isinstance(source, Path) else source
    ast = json.loads(_parse_cached(text))
    if not isinstance(ast, dict) or ast.get("error"):
        raise SyntaxError(f"Hog parse error: {ast}")
    if ast.get("node") != "Program":
        raise UnsupportedHogError(f"expected a Program, got {ast.get('node')!r}")
    return ast


# --------------------------------------------------------------------------------------------
# Interpreter
# --------------------------------------------------------------------------------------------


class _Throw(Exception):  # control flow, not an error
    def __init__(self, value: HogErrorValue) -> None:
        super().__init__(value.message)
        self.value = value


class _Return(Exception):  # control flow, not an error
    def __init__(self, value: JsonValue) -> None:
        super().__init__()
        self.value = value


class _Scope:
    __slots__ = ("parent", "vars")

    def __init__(self, parent: _Scope | None) -> None:
        self.parent = parent
        self.vars: dict[str, JsonValue] = {}

    def lookup(self, name: str) -> _Scope | None:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.vars:
                return scope
            scope = scope.parent
        return None


@dataclass(frozen=True, slots=True)
class _HogFunction:
    name: str
    params: list[str]
    body: dict[str, Any]
    closure: _Scope


class _Interpreter:
    def __init__(self, globals_: dict[str, JsonValue], fetch: FetchHandler) -> None:
        self.globals = globals_
        self.fetch_handler = fetch
        self.fetches: list[FetchRequest] = []

    # ---- statements ---------------------------------------------------------------------

    def run(self, program: dict[str, Any]) -> JsonValue:
        scope = _Scope(None)
        try:
            for statement in program["declarations"]:
                self.execute(statement, scope)
        except _Return as returned:
            return returned.value
        return None

    def execute(self, node: dict[str, Any], scope: _Scope) -> None:
        kind = node.get("node")
        if kind == "VariableDeclaration":
            name = node["name"]
            if name in scope.vars:
                raise UnsupportedHogError(f"variable {name!r} declared twice in one scope")
            expr = node.get("expr")
            scope.vars[name] = self.evaluate(expr, scope) if expr is not None else None
        elif kind == "VariableAssignment":
            self._assign(node, scope)
        elif kind == "IfStatement":
            if _truthy(self.evaluate(node["expr"], scope)):
                self.execute(node["then"], scope)
            elif node.get("else_") is not None:
                self.execute(node["else_"], scope)
        elif kind == "Block":
            inner = _Scope(scope)
            for statement in node["declarations"]:
                self.execute(statement, inner)
        elif kind == "ReturnStatement":
            expr = node.get("expr")
            raise _Return(self.evaluate(expr, scope) if expr is not None else None)
        elif kind == "ThrowStatement":
            value = self.evaluate(node["expr"], scope)
            if not isinstance(value, HogErrorValue):
                raise HogRuntimeError(f"can only throw Error values, got {_print_value(value)}")
            raise _Throw(value)
        elif kind == "TryCatchStatement":
            self._try(node, scope)
        elif kind == "Function":
            name = node["name"]
            scope.vars[name] = _HogFunction(name, list(node["params"]), node["body"], scope)
        else:
            raise UnsupportedHogError(f"unsupported statement node {kind!r}")

    def _assign(self, node: dict[str, Any], scope: _Scope) -> None:
        left = node["left"]
        if left.get("node") != "Field" or len(left["chain"]) != 1:
            raise UnsupportedHogError(f"unsupported assignment target {left}")
        name = left["chain"][0]
        owner = scope.lookup(name)
        if owner is None:
            raise HogRuntimeError(f"assignment to undeclared variable {name!r}")
        owner.vars[name] = self.evaluate(node["right"], scope)

    def _try(self, node: dict[str, Any], scope: _Scope) -> None:
        finally_stmt = node.get("finally_stmt")
        try:
            self.execute(node["try_stmt"], scope)
        except _Throw as thrown:
            for catch in node.get("catches") or []:
                var_name, type_name, block = catch
                if type_name is not None and type_name != thrown.value.type:
                    continue
                inner = _Scope(scope)
                if var_name is not None:
                    inner.vars[var_name] = thrown.value
                self.execute(block, inner)
                break
            else:
                raise
        finally:
            if finally_stmt is not None:
                self.execute(finally_stmt, scope)

    # ---- expressions --------------------------------------------------------------------

    def evaluate(self, node: dict[str, Any], scope: _Scope) -> JsonValue:
        kind = node.get("node")
        if kind == "Constant":
            return node["value"]
        if kind == "Field":
            return self._field(node["chain"], scope)
        if kind == "ArrayAccess":
            container = self.evaluate(node["array"], scope)
            return _get_property(container, self.evaluate(node["property"], scope))
        if kind == "Dict":
            result: dict[str, JsonValue] = {}
            for key_node, value_node in node["items"]:
                key = self.evaluate(key_node, scope)
                if not isinstance(key, str):
                    raise UnsupportedHogError(f"non-string dict key {key!r}")
                result[key] = self.evaluate(value_node, scope)
            return result
        if kind == "Call":
            return self._call(node, scope)
        if kind == "ArithmeticOperation":
            return self._arithmetic(node, scope)
        if kind == "CompareOperation":
            return self._compare(node, scope)
        if kind in ("And", "Or"):
            # The VM pushes every operand and then folds them: no short-circuit.
            values = [_truthy(self.evaluate(expr, scope)) for expr in node["exprs"]]
            return all(values) if kind == "And" else any(values)
        raise UnsupportedHogError(f"unsupported expression node {kind!r}")

    def _field(self, chain: list[Any], scope: _Scope) -> JsonValue:
        head = chain[0]
        owner = scope.lookup(head) if isinstance(head, str) else None
        if owner is not None:
            value = owner.vars[head]
        elif isinstance(head, str) and head in self.globals:
            value = self.globals[head]
        else:
            # Same failure as the VM's GET_GLOBAL: it aborts the invocation, catch or not.
            raise HogRuntimeError(f"Global variable not found: {'.'.join(map(str, chain))}")
        for key in chain[1:]:
            value = _get_property(value, key)
        return value

    def _call(self, node: dict[str, Any], scope: _Scope) -> JsonValue:
        for option in ("params", "distinct", "filter_expr", "order_by"):
            if node.get(option):
                raise UnsupportedHogError(f"call option {option!r} is not supported")
        name = node["name"]
        arg_nodes: list[dict[str, Any]] = node.get("args") or []

        if name == "ifNull":
            # `??` compiles to a conditional jump, so the right side runs only when needed.
            if len(arg_nodes) != 2:
                raise UnsupportedHogError("ifNull takes two arguments")
            left = self.evaluate(arg_nodes[0], scope)
            return left if left is not None else self.evaluate(arg_nodes[1], scope)

        owner = scope.lookup(name)
        args = [self.evaluate(arg, scope) for arg in arg_nodes]
        if owner is not None:
            function = owner.vars[name]
            if not isinstance(function, _HogFunction):
                raise HogRuntimeError(f"{name!r} is not a function")
            return self._invoke(function, args)
        if name == "fetch":
            return self._fetch(args)
        builtin = _STL.get(name)
        if builtin is None:
            raise UnsupportedHogError(f"unsupported function {name!r}")
        return builtin(args)

    def _invoke(self, function: _HogFunction, args: list[JsonValue]) -> JsonValue:
        if len(args) > len(function.params):
            raise HogRuntimeError(f"{function.name} takes {len(function.params)} arguments")
        scope = _Scope(function.closure)
        for index, param in enumerate(function.params):
            scope.vars[param] = args[index] if index < len(args) else None
        try:
            self.execute(function.body, scope)
        except _Return as returned:
            return returned.value
        return None

    def _arithmetic(self, node: dict[str, Any], scope: _Scope) -> JsonValue:
        op = node["op"]
        left = _to_number(self.evaluate(node["left"], scope))
        right = _to_number(self.evaluate(node["right"], scope))
        if op == "+":
            return _normalize_number(left + right)
        if op == "-":
            return _normalize_number(left - right)
        raise UnsupportedHogError(f"unsupported arithmetic operator {op!r}")

    def _compare(self, node: dict[str, Any], scope: _Scope) -> bool:
        op = node["op"]
        left, right = _unify(self.evaluate(node["left"], scope), self.evaluate(node["right"], scope))
        if op == "==":
            return _strict_equal(left, right)
        if op == "!=":
            return not _strict_equal(left, right)
        if op in ("<", "<=", ">", ">="):
            return _relational(left, right, op)
        raise UnsupportedHogError(f"unsupported comparison operator {op!r}")

    def _fetch(self, args: list[JsonValue]) -> JsonValue:
        if not args or len(args) > 2:
            raise HogRuntimeError("fetch takes a URL and an optional options dict")
        url, options = args[0], (args[1] if len(args) > 1 else None)
        if not isinstance(url, str) or not url:
            raise HogRuntimeError(f"fetch: invalid URL {_print_value(url)}")
        options = options if isinstance(options, dict) else {}
        method = options.get("method")
        method = method.upper() if isinstance(method, str) and method else "POST"
        raw_headers = options.get("headers")
        if isinstance(raw_headers, dict):
            # PostHog keeps only string-valued headers: a null secret means no header at all.
            headers = {k: v for k, v in raw_headers.items() if isinstance(v, str)}
        else:
            headers = {"Content-Type": "application/json"}
        body = options.get("body")
        if method in ("GET", "HEAD") or body is None:
            wire_body = None
        else:
            wire_body = body if isinstance(body, str) else _json_stringify([body])
        request = FetchRequest(url=url, method=method, headers=headers, body=wire_body)
        self.fetches.append(request)
        response = self.fetch_handler(request)
        return {"status": response.status, "body": json.loads(json.dumps(response.body))}


# --------------------------------------------------------------------------------------------
# JavaScript value semantics
# --------------------------------------------------------------------------------------------


def _is_number(value: JsonValue) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _truthy(value: JsonValue) -> bool:
    if value is None or value is False:
        return False
    if _is_number(value):
        return not (value == 0 or (isinstance(value, float) and math.isnan(value)))
    if isinstance(value, str):
        return value != ""
    return True  # dicts, lists, errors and functions are objects: always truthy


def _to_number(value: JsonValue) -> float | int:
    if value is None or value is False:
        return 0
    if value is True:
        return 1
    if _is_number(value):
        return value  # type: ignore[no-any-return]
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return 0
        try:
            return float(text) if not re.fullmatch(r"[+-]?\d+", text) else int(text)
        except ValueError:
            return math.nan
    return math.nan


def _normalize_number(value: float | int) -> float | int:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _unify(left: JsonValue, right: JsonValue) -> tuple[JsonValue, JsonValue]:
    # Mirrors the VM's comparison type unification for the scalar cases.
    if _is_number(left) and isinstance(right, str):
        return left, _to_number(right)
    if isinstance(left, str) and _is_number(right):
        return _to_number(left), right
    if isinstance(left, bool) and isinstance(right, str):
        return left, right == "true"
    if isinstance(left, str) and isinstance(right, bool):
        return left == "true", right
    if isinstance(left, bool) and _is_number(right):
        return int(left), right
    if _is_number(left) and isinstance(right, bool):
        return left, int(right)
    return left, right


def _strict_equal(left: JsonValue, right: JsonValue) -> bool:
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left is right
    if _is_number(left) and _is_number(right):
        return bool(left == right)
    if left is None or right is None:
        return left is None and right is None
    if isinstance(left, str) and isinstance(right, str):
        return left == right
    return left is right


def _relational(left: JsonValue, right: JsonValue, op: str) -> bool:
    if isinstance(left, str) and isinstance(right, str):
        a: Any = left.encode("utf-16-be", "surrogatepass")
        b: Any = right.encode("utf-16-be", "surrogatepass")
    else:
        a, b = _to_number(left), _to_number(right)
        if (isinstance(a, float) and math.isnan(a)) or (isinstance(b, float) and math.isnan(b)):
            return False
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


def _get_property(container: JsonValue, key: JsonValue) -> JsonValue:
    if isinstance(container, dict):
        return container.get(key) if isinstance(key, str) else None
    if isinstance(container, list) and _is_number(key):
        index = int(key)
        if index == 0:
            raise HogRuntimeError("Hog arrays start from index 1")
        position = index - 1 if index > 0 else len(container) + index
        return container[position] if 0 <= position < len(container) else None
    return None


def _js_number(value: float | int) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    text = repr(value)
    if "e" not in text:
        return text
    mantissa, exponent = text.split("e")
    exp = int(exponent)
    if -7 < exp < 21:
        # JavaScript only switches to exponent notation below 1e-6.
        digits = mantissa.replace(".", "").lstrip("-")
        sign = "-" if value < 0 else ""
        return f"{sign}0.{'0' * (-exp - 1)}{digits}"
    return f"{mantissa}e{'+' if exp > 0 else '-'}{abs(exp)}"


def _js_string(value: JsonValue) -> str:
    # JavaScript's String(x), which position() applies to its needle.
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if _is_number(value):
        return _js_number(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ",".join("" if v is None else _js_string(v) for v in value)
    return "[object Map]" if isinstance(value, dict) else "[object Object]"


_PRINT_ESCAPES = {
    "\b": "\\b",
    "\f": "\\f",
    "\r": "\\r",
    "\n": "\\n",
    "\t": "\\t",
    "\0": "\\0",
    "\v": "\\v",
    "\\": "\\\\",
    "'": "\\'",
}


def _print_value(value: JsonValue) -> str:
    """Hog's value printer (what concat/print use for non-strings)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if _is_number(value):
        return _js_number(value)
    if isinstance(value, str):
        return "'" + "".join(_PRINT_ESCAPES.get(c, c) for c in value) + "'"
    if isinstance(value, list):
        return "[" + ", ".join(_print_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_print_value(k)}: {_print_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, HogErrorValue):
        payload = f", {_print_value(value.payload)}" if value.payload else ""
        return f"{value.type}({_print_value(value.message)}{payload})"
    if isinstance(value, _HogFunction):
        return f"fn<{value.name}({len(value.params)})>"
    raise UnsupportedHogError(f"cannot print {type(value).__name__}")


def _print_string(value: JsonValue) -> str:
    return value if isinstance(value, str) else _print_value(value)


# ---- UTF-16 string helpers (JavaScript strings are UTF-16 code unit sequences) ------------


def _utf16(value: str) -> bytes:
    return value.encode("utf-16-le", "surrogatepass")


def _from_utf16(data: bytes) -> str:
    return data.decode("utf-16-le", "surrogatepass")


def _utf16_len(value: str) -> int:
    return len(value) if value.isascii() else len(_utf16(value)) // 2


def _utf16_index(haystack: str, needle: str) -> int:
    if haystack.isascii() and needle.isascii():
        return haystack.find(needle)
    hay, nee = _utf16(haystack), _utf16(needle)
    start = 0
    while True:
        found = hay.find(nee, start)
        if found < 0:
            return -1
        if found % 2 == 0:
            return found // 2
        start = found + 1


def _utf16_slice(value: str, start: int, end: int) -> str:
    if value.isascii():
        return value[start:end]
    return _from_utf16(_utf16(value)[2 * start : 2 * end])


# ---- STL --------------------------------------------------------------------------------


def _arity(args: list[JsonValue], name: str, low: int, high: int) -> None:
    if not low <= len(args) <= high:
        raise HogRuntimeError(f"{name} takes {low}..{high} arguments, got {len(args)}")


def _stl_concat(args: list[JsonValue]) -> str:
    return "".join("" if a is None else _print_string(a) for a in args)


def _stl_empty(args: list[JsonValue]) -> bool:
    _arity(args, "empty", 1, 1)
    value = args[0]
    if value is None:
        return True
    if isinstance(value, list | dict):
        return len(value) == 0
    if _is_number(value) or isinstance(value, bool):
        return False
    if isinstance(value, str):
        return value == ""
    return False


def _stl_length(args: list[JsonValue]) -> JsonValue:
    _arity(args, "length", 1, 1)
    value = args[0]
    if value is None:
        # JavaScript: TypeError reading `.length` of null; uncatchable from Hog.
        raise HogRuntimeError("TypeError: Cannot read properties of null (reading 'length')")
    if isinstance(value, str):
        return _utf16_len(value)
    if isinstance(value, list):
        return len(value)
    return None  # `.length` of a Map, number or boolean is undefined


def _stl_position(args: list[JsonValue]) -> int:
    _arity(args, "position", 2, 3)
    haystack, needle = args[0], args[1]
    if not isinstance(haystack, str):
        return 0
    return _utf16_index(haystack, _js_string(needle)) + 1


def _js_integer(value: float | int) -> float | int:
    if isinstance(value, float):
        if math.isnan(value):
            return 0
        if math.isinf(value):
            return value
        return int(value)
    return value


def _stl_substring(args: list[JsonValue]) -> str:
    _arity(args, "substring", 2, 3)
    text = args[0]
    if not isinstance(text, str):
        return ""
    size = _utf16_len(text)
    start_index = _to_number(args[1]) - 1
    length_arg = args[2] if len(args) > 2 else None
    length = length_arg if _is_number(length_arg) else size - start_index
    if isinstance(start_index, float) and math.isnan(start_index):
        return ""
    if start_index < 0 or length < 0:
        return ""
    if not start_index < size:
        return ""
    begin = _js_integer(start_index)
    end = min(size, _js_integer(start_index + length))
    if end <= begin:
        return ""
    return _utf16_slice(text, int(begin), int(end))


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _to_json_ready(value: JsonValue) -> JsonValue:
    if isinstance(value, dict):
        return {k: _to_json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_json_ready(v) for v in value]
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return None
        return _normalize_number(value)
    if value is None or isinstance(value, str | int | bool):
        return value
    raise UnsupportedHogError(f"jsonStringify of {type(value).__name__}")


def _json_stringify(args: list[JsonValue]) -> str:
    _arity(args, "jsonStringify", 1, 2)
    indent = args[1] if len(args) > 1 and _is_number(args[1]) and args[1] > 0 else None
    text = json.dumps(
        _to_json_ready(args[0]),
        ensure_ascii=False,
        separators=(",", ":") if indent is None else (",", ": "),
        indent=int(indent) if indent is not None else None,
    )
    # JSON.stringify escapes lone surrogates; Python would emit them raw (not valid UTF-8).
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _stl_error(args: list[JsonValue]) -> HogErrorValue:
    _arity(args, "Error", 0, 2)
    message = args[0] if args else ""
    payload = args[1] if len(args) > 1 else None
    return HogErrorValue(type="Error", message=_print_string(message), payload=payload)


_STL: dict[str, Callable[[list[JsonValue]], JsonValue]] = {
    "concat": _stl_concat,
    "empty": _stl_empty,
    "length": _stl_length,
    "position": _stl_position,
    "substring": _stl_substring,
    "jsonStringify": _json_stringify,
    "Error": _stl_error,
}
