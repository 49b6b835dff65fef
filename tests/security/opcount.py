"""How many CPU instructions a call executes: work measured as operations, never as time.

Every case runs in one Python process under valgrind's callgrind, which counts the instructions
executed inside ``operator.call`` (the only place the script uses it) and dumps the count after
each call. Counts are deterministic to a few dozen instructions (hash seed fixed), so a test can
compare the work on an input of size n with the work on 8n, and the work per input character
with a bound, on any machine and however busy it is.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

from tests.unavailable import unavailable

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Case:
    name: str
    setup: str  # Python statements defining ``fn`` (called with one argument)
    arg: str  # a Python expression using ``n``: the input of size ~n
    sizes: tuple[int, ...]


def count(cases: list[Case], timeout: float = 600) -> dict[tuple[str, int], tuple[int, int]]:
    """{(case, n): (instructions, len(input))} for every case and size."""
    if shutil.which("valgrind") is None:
        unavailable("valgrind is not installed (scripts/security-deps.sh installs it)")
    lines = ["import operator, sys", "sizes = []"]
    for case in cases:
        lines.append(f"# {case.name}")
        lines.append("def _case():")
        lines.append(textwrap.indent(case.setup, "    "))
        lines.append("    return fn")
        lines.append("fn = _case()")
        for n in case.sizes:
            lines.append(f"n = {n}")
            lines.append(f"x = {case.arg}")
            lines.append("fn(x[:64])  # warm: lazily built state is not the input's cost")
            lines.append("sizes.append(len(x))")
            lines.append("operator.call(fn, x)")
    lines.append("print(' '.join(map(str, sizes)))")
    with tempfile.TemporaryDirectory(prefix="opcount") as tmp:
        script = Path(tmp) / "cases.py"
        script.write_text("\n".join(lines) + "\n")
        out = Path(tmp) / "cg.out"
        env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(ROOT)}
        res = subprocess.run(
            ["valgrind", "--tool=callgrind", "--collect-atstart=no",
             "--toggle-collect=_operator_call", "--dump-after=_operator_call",
             f"--callgrind-out-file={out}", sys.executable, str(script)],
            capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT, check=False,
        )
        assert res.returncode == 0, res.stderr[-3000:]
        sizes = [int(s) for s in res.stdout.split()]
        dumps = sorted(Path(tmp).glob("cg.out.*"), key=lambda p: int(p.suffix[1:]))
        totals = [int(re.search(r"^totals: (\d+)", d.read_text(), re.M).group(1)) for d in dumps]  # type: ignore[union-attr]
    keys = [(c.name, n) for c in cases for n in c.sizes]
    assert len(totals) == len(keys) == len(sizes), (len(totals), len(keys), res.stderr[-2000:])
    return {k: (t, s) for k, t, s in zip(keys, totals, sizes, strict=True)}
