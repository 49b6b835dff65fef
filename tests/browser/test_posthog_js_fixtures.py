"""The recorded posthog-js requests (tests/data/posthog_js_requests) are complete and decode.

No browser needed: this guards the fixtures the capture API tests rely on.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .browser import chain_text, decode_capture_body, unwrap_capture_body

DATA = Path(__file__).resolve().parents[1] / "data" / "posthog_js_requests"
METAS = sorted(p for p in DATA.glob("*.json") if not p.name.endswith(".decoded.json")
               and p.name != "index.json")


def test_the_recording_covers_every_body_form():
    index = json.loads((DATA / "index.json").read_text())
    assert {row["name"] for row in index} == {p.stem for p in METAS}
    captures = [row for row in index if row["path"] == "/e/" and row["method"] == "POST"]
    kinds = {(row["content_type"], row["query"], row["gzip_magic"]) for row in captures}
    assert ("text/plain", "", True) in kinds  # gzip, no compression parameter
    assert ("application/json", "", False) in kinds
    assert ("application/x-www-form-urlencoded", "compression=base64", False) in kinds
    assert any(len(row["events"]) > 1 for row in captures)  # a real multi-event batch
    assert any(row["resource_type"] == "ping" for row in captures)  # sendBeacon
    assert any(row["path"] == "/flags/" for row in index)
    assert any(row["path"].startswith("/array/") for row in index)


@pytest.mark.parametrize("meta_path", METAS, ids=lambda p: p.stem)
def test_fixture_decodes(meta_path: Path):
    meta = json.loads(meta_path.read_text())
    body = meta_path.with_suffix(".body").read_bytes()
    assert len(body) == meta["body_bytes"]
    if not body:
        return
    ctype = meta["headers"].get("content-type", "")
    decoded = unwrap_capture_body(body, ctype, meta["query"])
    assert decoded == json.loads(meta_path.with_name(meta["name"] + ".decoded.json").read_text())
    if meta["path"] != "/e/":
        return
    assert decoded["api_key"] == "phc_fixture_capture_token"
    events = decode_capture_body(body, ctype, meta["query"])
    assert [e["event"] for e in events] == meta["events"]
    for e in events:
        p = e["properties"]
        assert e["uuid"] and e["timestamp"]
        assert p["distinct_id"] == "user-fixture"
        assert p["token"] == "phc_fixture_capture_token"
        assert p["$session_id"]
        if e["event"] == "$autocapture":
            assert p["email"] == "fixture@example.com"
            assert chain_text(p["$elements_chain"]) == p.get("$el_text")


def test_the_invite_click_is_in_every_variant():
    found = set()
    for meta_path in METAS:
        meta = json.loads(meta_path.read_text())
        if "$autocapture" not in meta.get("events", []):
            continue
        body = meta_path.with_suffix(".body").read_bytes()
        for e in decode_capture_body(body, meta["headers"].get("content-type", ""),
                                     meta["query"]):
            if chain_text(e["properties"].get("$elements_chain", "")) == "Invite member":
                assert e["properties"]["$current_url"].endswith("/team")
                found.add(meta["variant"])
    assert found == {"gzip", "gzip-batched", "json"}
