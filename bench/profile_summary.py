"""Summarize py-spy ``--format raw`` (collapsed stacks) into the tables we read and commit.

Self time says where the CPU goes; inclusive time says which of our functions it goes under.
"""

from __future__ import annotations

import re
from collections import Counter

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::(?P<line>\d+))?\)$")

# py-spy names files by module path ("asyncpg/connection.py"), or absolute when it cannot.
BUCKETS = [
    ("receiver (our code)", "receiver/"),
    ("asyncpg", "asyncpg/"),
    ("starlette", "starlette/"),
    ("fastapi", "fastapi/"),
    ("pydantic", "pydantic"),
    ("uvicorn", "uvicorn/"),
    ("httptools", "httptools/"),
    ("uvloop", "uvloop/"),
    ("prometheus_client", "prometheus_client/"),
    ("opentelemetry", "opentelemetry/"),
    ("asyncio (stdlib; includes time in the uvloop C loop)", "asyncio/"),
]


def _in(file: str, marker: str) -> bool:
    return file.startswith(marker) or f"/{marker}" in file


def _parse(frame: str) -> tuple[str, str]:
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip(), ""
    return m.group("func"), m.group("file")


def _short(file: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def summarize(text: str, top: int = 30) -> str:
    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    bucket: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        line = line.rstrip()
        if not line:
            continue
        stack, _, count_s = line.rpartition(" ")
        try:
            count = int(count_s)
        except ValueError:
            continue
        frames = [f for f in stack.split(";") if f]
        # py-spy puts the process/thread as the first frame(s); skip non-code frames.
        code = [f for f in frames if "(" in f]
        if not code:
            continue
        total += count
        func, file = _parse(code[-1])
        self_t[f"{func} ({_short(file)})"] += count
        b = next((name for name, marker in BUCKETS if _in(file, marker)), "other")
        bucket[b] += count
        seen = set()
        for f in code:
            fn, fl = _parse(f)
            if _in(fl, "receiver/"):
                key = f"{fn} ({_short(fl)})"
                if key not in seen:
                    seen.add(key)
                    incl[key] += count
    if not total:
        return "no samples\n"
    lines = [f"samples: {total}", "", "self time by package:"]
    for name, c in bucket.most_common():
        lines.append(f"  {100 * c / total:5.1f}%  {name}")
    lines += ["", f"top {top} functions by self time:"]
    for name, c in self_t.most_common(top):
        lines.append(f"  {100 * c / total:5.1f}%  {name}")
    lines += ["", "our functions by inclusive time:"]
    for name, c in incl.most_common(top):
        lines.append(f"  {100 * c / total:5.1f}%  {name}")
    return "\n".join(lines) + "\n"
