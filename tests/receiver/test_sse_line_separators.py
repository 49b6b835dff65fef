"""U+0085, U+2028 and U+2029 never reach an SSE frame raw (issue 14, finding 7).

JSON may carry them unescaped, but httpx-sse 0.4.0 — the oldest release autoplay-sdk allows —
reads lines with httpx's ``iter_lines()``, which splits like ``str.splitlines()``: a frame cut
there loses the event (its JSON no longer parses) or, worse, turns the rest into other fields.
The receiver writes them as ``\\u0085``/``\\u2028``/``\\u2029`` inside the JSON strings: valid
JSON, the same values after parsing. Checked with the real httpx-sse 0.4.0, installed for this
test into a throwaway directory (it cannot share the project's venv with the SDK's newer pin).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from receiver.delivery import wire
from tests.faults.kit import nodelay, show
from tests.unavailable import unavailable

HTTPX_SSE = "httpx-sse==0.4.0"
SEPARATORS = "\u2028\u2029\u0085"

READER = r"""
import json, sys
import httpx
import httpx_sse
assert httpx_sse.__file__.startswith(sys.argv[3]), httpx_sse.__file__
url, key = sys.argv[1], sys.argv[2]
with httpx.Client(timeout=30) as client:
    with httpx_sse.connect_sse(client, "GET", url, headers={"Authorization": "Bearer " + key}) as es:
        for sse in es.iter_sse():
            if sse.event == "message" and sse.data:
                print(json.dumps(json.loads(sse.data)), flush=True)
                break
"""


@pytest.fixture(scope="module")
def old_httpx_sse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("httpx-sse-0.4.0")
    res = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check",
         "--target", str(target), HTTPX_SSE],
        capture_output=True, text=True, timeout=300, check=False,
    )
    if res.returncode != 0:
        unavailable(f"could not install {HTTPX_SSE}: {res.stderr[-500:]}")
    return target


def test_frames_escape_unicode_line_separators() -> None:
    payload = {"title": f"a{SEPARATORS}b", "n": 1}
    encoded = wire.sse_safe_json(payload)
    assert orjson.loads(encoded) == payload
    assert encoded.decode("utf-8").splitlines() == [encoded.decode("utf-8")]
    assert b"\\u2028" in encoded and b"\\u2029" in encoded and b"\\u0085" in encoded


def test_httpx_sse_040_reads_frames_carrying_them(
    receiver: Any, make_product: Callable[..., Any], old_httpx_sse: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    nodelay(receiver)
    p = make_product()
    text = f"Pay{SEPARATORS}now"
    url = f"https://app.example.com/pay/{SEPARATORS}x"
    body = {
        "event": "$autocapture", "event_type": "click", "uuid": str(uuid.uuid4()),
        "distinct_id": f"user{SEPARATORS}1", "session_id": "s-1", "current_url": url,
        "elements_chain": f'button:text="{text}"nth-child="1"',
    }
    r = httpx.post(p.webhook_url, content=orjson.dumps(body),
                   headers={"x-posthog-secret": p.webhook_secret}, timeout=10)
    assert r.status_code == 200, r.text
    res = subprocess.run(
        [sys.executable, "-c", READER, f"{p.stream_url}?since=0", p.stream_key, str(old_httpx_sse)],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PYTHONPATH": str(old_httpx_sse), "PATH": "/usr/bin:/bin"},
    )
    assert res.returncode == 0, res.stderr[-2000:]
    frame = json.loads(res.stdout.splitlines()[0])
    action = frame["actions"][0]
    assert frame["user_id"] == f"user{SEPARATORS}1"
    assert action["raw_url"] == url and action["user_id"] == frame["user_id"]
    show(capsys, "sse/line-separators", reader=HTTPX_SSE, raw_url=repr(action["raw_url"]))
