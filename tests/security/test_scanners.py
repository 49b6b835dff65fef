"""Every scanner that reads attacker-controlled text does work linear in it, with a small constant.

Anyone holding the public capture token (it is in every page's source) chooses the strings these
functions read. For each scanner and each adversarial family of inputs (the shapes that made
the old patterns backtrack, and their relatives), the instructions executed are counted under
valgrind (tests/security/opcount.py) on an input of n characters and on one of 8n:

* the work on 8n is at most 8 × 1.25 times the work on n (linear, not n² or worse), and
* the work per character is under a fixed bound (a small constant).

Before this, the e-mail redaction regex cost ~48,000 instructions per character on
``a%40aa.a1`` repeated (37 s of CPU for a 20 KB gzipped body) and ``";" * 65536`` in an elements
chain was read to its end for every event; both cases fail these assertions on that code.
"""

from __future__ import annotations

from typing import Any

import pytest

from receiver.ingest import elements
from tests.faults.kit import show
from tests.security.opcount import Case, count

SIZES = (4_000, 32_000)
LINEAR_SLACK = 1.25
# Instructions per input character, across every family below. The linear scanners measure
# 20-2,400 (the log scrubber runs two patterns); the patterns they replaced measured 48,000
# (e-mail) and more.
MAX_PER_CHAR = 3_000


def family(name: str, setup: str, unit: str, *, kind: str = "str") -> Case:
    rep = f"({unit!r} * (n // {len(unit)} + 1))[:n]"
    if kind == "bytes":
        rep = f"({unit.encode()!r} * (n // {len(unit)} + 1))[:n]"
    return Case(name=f"{name}: {unit[:24]!r}", setup=setup, arg=rep, sizes=SIZES)


TEXT = "from receiver.ingest import privacy\nfn = privacy._Scrubber(privacy.DEFAULT, None).text"
STRIP = (
    "from receiver.ingest import privacy\n"
    "fn = privacy._Scrubber(privacy.Policy.from_json({'query': 'strip'}), None).chain"
)
LOGS = "from receiver.ops.logging import scrub as fn"
CHAIN = "from receiver.ingest.elements import parse_elements_chain as fn"
URL = "from receiver.ingest.normalize import canonical_url as fn"
B64 = "from receiver.ingest.capture import _is_strict_base64 as fn"
NODES = "from receiver.ingest.budget import count_nodes as fn"

EMAIL_UNITS = [
    "a%40aa.a1", "@", "a@", "a@a.", "x@y.zz,", "a" * 70 + "@b.cc ", "ab.ab@", "%40",
    "x%40" + "a" * 63 + ".bc ", "a.b-c@", "a.bc04%", "@a." + "b" * 70,
]
CARD_UNITS = ["1 ", "1-", "4111111111111111 ", "4111-1111-1111-1111x", "1"]
CASES = (
    [family("privacy text", TEXT, u) for u in EMAIL_UNITS + CARD_UNITS]
    + [family("privacy chain hrefs", STRIP, u) for u in ['href="', 'attr__href="a?b\\"', '\\"href="x']]
    + [family("log scrub", LOGS, u)
       for u in ["a@", "a.a@", "token= ", "Bearer x ", "phc_aaaaaa", "a%40aa.a1"]]
    + [family("elements chain", CHAIN, u) for u in [";", ":", 'a:attr__x="', '\\"', "a.", 'a:b="\\";', ":a="]]
    + [family("canonical url", URL, u) for u in ["/1a", "/" + "a1" * 8, "/" + "ab-" * 8]]
    + [family("strict base64", B64, u, kind="bytes") for u in ["AAAA", "AA=A"]]
    + [family("json value count", NODES, u, kind="bytes") for u in ['{},', '"\\', '"a",', '[']]
)


@pytest.fixture(scope="module")
def counts() -> dict[tuple[str, int], tuple[int, int]]:
    return count(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_scanner_work_is_linear_with_a_small_constant(
    case: Case, counts: dict[tuple[str, int], tuple[int, int]], capsys: pytest.CaptureFixture[str]
) -> None:
    (small, n_small), (large, n_large) = (counts[(case.name, n)] for n in case.sizes)
    per_char = large / n_large
    show(capsys, f"scanner/{case.name}", instructions_n=small, instructions_8n=large,
         ratio=f"{large / max(small, 1):.2f}", per_char=f"{per_char:.0f}")
    assert large <= (n_large / n_small) * LINEAR_SLACK * max(small, 1000), (small, large)
    assert per_char <= MAX_PER_CHAR, per_char


def test_malformed_elements_count_toward_the_element_cap(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``";" * 65536`` is 65,536 malformed elements: every one read counts toward MAX_ELEMENTS."""
    calls = 0
    real = elements._parse_element

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(elements, "_parse_element", counting)
    for chain in (";" * 65536, "\\" + ";" * 65535, 'x:y="1";' + ";" * 65528, "!;" * 32768):
        calls = 0
        assert elements.parse_elements_chain(chain) is not None
        # A strict pass and, when the chain has a backslash, a lenient one.
        assert calls <= 2 * elements.MAX_ELEMENTS, (chain[:10], calls)
    show(capsys, "scanner/elements-cap", max_elements=elements.MAX_ELEMENTS, element_reads=calls)
