"""docs/high-availability.md shows what the repository ships and what make bench measured.

The page's other blocks are run where they matter: the formation is built from its blocks
(tests/ha/formation.py), ``receiver db status`` and the GRANT in tests/ha/test_failover.py,
haproxy's command in tests/ha/test_haproxy.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from bench.ha import sizing_table
from tests.docblocks import one_block

ROOT = Path(__file__).resolve().parents[2]


def test_install_block_runs() -> None:
    block = one_block("docs/high-availability.md", "make ha-deps", "bash")
    res = subprocess.run(["bash", "-ec", block.text], cwd=ROOT, capture_output=True, text=True,
                         timeout=600, check=False)
    assert res.returncode == 0, res.stderr


def test_the_haproxy_config_shown_is_the_one_shipped() -> None:
    shown = one_block("docs/high-availability.md", "backend streams", "haproxy").text
    assert shown == (ROOT / "deploy" / "haproxy.cfg").read_text()
    env = {**os.environ, "RECEIVER_LB_BIND": "127.0.0.1:1", "RECEIVER_1": "127.0.0.1:2",
           "RECEIVER_2": "127.0.0.1:3", "RECEIVER_3": "127.0.0.1:4",
           "PATH": f"{os.environ.get('PATH', '')}:/usr/sbin"}
    res = subprocess.run(["haproxy", "-c", "-f", "deploy/haproxy.cfg"], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_sizing_tables_are_the_bench_results() -> None:
    page = (ROOT / "docs" / "high-availability.md").read_text()
    m = re.search(r"<!-- sizing: [^\n]*-->\n(.*?)<!-- /sizing -->", page, re.S)
    assert m, "the Sizing section lost its markers"
    results = json.loads((ROOT / "docs" / "bench" / "ha" / "results.json").read_text())
    failed = [k for k, v in results.items() if isinstance(v, dict) and "error" in v]
    assert not failed, f"make bench failed on {failed}: rerun it (see the page)"
    assert m.group(1).strip() == sizing_table(results).strip(), (
        "regenerate: python -c 'import json; from bench.ha import sizing_table; "
        "print(sizing_table(json.load(open(\"docs/bench/ha/results.json\"))))'"
    )
