"""Pure units of the bridge: settings, prompt helpers, dedupe keys, the fake LLM's digest."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from autoplay_sdk import ActionsPayload
from pydantic import ValidationError

from bridge.app import stream_url_with_replay
from bridge.prompts import SYSTEM_PROMPT, name_from_email, system_prompt_for
from bridge.settings import BridgeSettings
from bridge.state import SeenSet, dedupe_key
from tests.fakes.llm import answer_for

TUTORIAL = Path("/work/shared/seed/000_b3db3f760e988fdf.txt")

TUTORIAL_ENV = {
    "STREAM_URL": "http://127.0.0.1:8000/stream/acme",
    "UNKEY_API_KEY": "uk_live_x",
    "OPENAI_API_KEY": "sk-x",
    "LLM_MODEL": "gpt-4o-mini",
    "SUMMARY_THRESHOLD": "7",
    "LOOKBACK_SECONDS": "120",
    "MAX_ACTIONS": "12",
    "OPENAI_BASE_URL": "http://127.0.0.1:11434/v1",
}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    bridge_names = ["BRIDGE_STREAM_URL", "BRIDGE_LLM_MODEL", "BRIDGE_LLM_BASE_URL"]
    for name in [*TUTORIAL_ENV, *bridge_names, "BRIDGE_STREAM_TOKEN"]:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_settings_accept_the_tutorial_env_names(clean_env: pytest.MonkeyPatch) -> None:
    for name, value in TUTORIAL_ENV.items():
        clean_env.setenv(name, value)
    s = BridgeSettings()
    assert s.stream_url == TUTORIAL_ENV["STREAM_URL"]
    assert s.stream_token.get_secret_value() == "uk_live_x"
    assert s.llm_api_key.get_secret_value() == "sk-x"
    assert (s.summary_threshold, s.lookback_seconds, s.max_actions) == (7, 120, 12)
    assert s.llm_base_url == "http://127.0.0.1:11434/v1"
    # Secrets never print.
    assert "uk_live_x" not in repr(s) and "sk-x" not in repr(s)


def test_bridge_names_win_over_tutorial_names(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("STREAM_URL", "http://a/stream/p")
    clean_env.setenv("BRIDGE_STREAM_URL", "http://b/stream/p")
    clean_env.setenv("LLM_MODEL", "tutorial-model")
    clean_env.setenv("BRIDGE_LLM_MODEL", "bridge-model")
    clean_env.setenv("BRIDGE_LLM_BASE_URL", "")
    s = BridgeSettings()
    assert s.stream_url == "http://b/stream/p"
    assert s.llm_model == "bridge-model"
    assert s.llm_base_url is None  # empty means "OpenAI", not ""


def test_settings_reject_a_missing_or_bad_stream_url(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="STREAM_URL"):
        BridgeSettings()
    with pytest.raises(ValidationError, match="http"):
        BridgeSettings(stream_url="ftp://x/stream/p")


def test_env_example_documents_every_setting() -> None:
    example = (Path(__file__).resolve().parents[2] / "bridge" / ".env.example").read_text()
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", example, flags=re.M))
    for name, field in BridgeSettings.model_fields.items():
        aliases = field.validation_alias.choices  # type: ignore[union-attr]
        assert aliases[0] in documented, f"{name}: {aliases[0]} missing from .env.example"
    s = BridgeSettings(_env_file=None, **{"stream_url": "http://x/stream/p"})  # type: ignore[call-arg]
    assert s.port == 8090


@pytest.mark.parametrize(
    ("email", "name"),
    [
        ("jane.doe@example.com", "Jane Doe"),
        ("muhammad@x.io", "Muhammad"),
        ("sam_o_neil@x.io", "Sam O Neil"),
        ("jane+test@x.io", "Jane"),
        ("1234@x.io", None),
        ("no-at-sign", None),
        ("", None),
        (None, None),
    ],
)
def test_name_from_email(email: str | None, name: str | None) -> None:
    assert name_from_email(email) == name


def test_system_prompt_is_the_tutorials_verbatim() -> None:
    if not TUTORIAL.is_file():
        pytest.skip(f"{TUTORIAL} not on this machine")
    m = re.search(r'SYSTEM_PROMPT = """(.*?)"""', TUTORIAL.read_text(), flags=re.S)
    assert m is not None
    assert m.group(1) == SYSTEM_PROMPT
    assert system_prompt_for("Jane") == SYSTEM_PROMPT + "\n\nUser's first name: Jane."
    assert system_prompt_for(None) == SYSTEM_PROMPT


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://r:8000/stream/acme", "http://r:8000/stream/acme?replay=300"),
        ("http://r/stream/acme?x=1", "http://r/stream/acme?x=1&replay=300"),
        ("http://r/stream/acme?replay=60", "http://r/stream/acme?replay=60"),
    ],
)
def test_stream_url_asks_for_replay(url: str, expected: str) -> None:
    assert stream_url_with_replay(url, 300) == expected


def _payload(
    session: str, forwarded_at: float, index: int, product: str = "acme"
) -> ActionsPayload:
    return ActionsPayload.from_dict(
        {
            "type": "actions",
            "product_id": product,
            "session_id": session,
            "user_id": "u",
            "count": 1,
            "forwarded_at": forwarded_at,
            "actions": [{"index": index, "type": "click", "description": "d"}],
        }
    )


def test_dedupe_key_identifies_a_replayed_frame() -> None:
    a = _payload("s1", 1000.5, 3)
    assert dedupe_key(a) == dedupe_key(_payload("s1", 1000.5, 3))
    assert dedupe_key(a) != dedupe_key(_payload("s1", 1000.5, 4))
    assert dedupe_key(a) != dedupe_key(_payload("s2", 1000.5, 3))
    assert dedupe_key(a) != dedupe_key(_payload("s1", 1000.5, 3, product="other"))
    # Without a forwarded_at there is no identity to dedupe on: never drop such a frame.
    assert dedupe_key(_payload("s1", 0, 3)) is None


def test_seen_set_is_bounded() -> None:
    seen = SeenSet(max_entries=3)
    keys = [("p", "s", float(i), i) for i in range(5)]
    assert all(seen.add(k) for k in keys)
    assert len(seen) == 3
    assert not seen.add(keys[-1])  # still remembered
    assert seen.add(keys[0])  # evicted, so new again


def test_fake_llm_digest_reads_what_it_received() -> None:
    chat = [
        {"role": "system", "content": SYSTEM_PROMPT + "\n\nUser's first name: Jane Doe."},
        {
            "role": "user",
            "content": "[RECENT PRODUCT ACTIVITY]\nRecent activity:\n"
            "1. [4] click: User clicked Invite member button on the team page — http://a/team\n\n"
            "[CURRENT USER MESSAGE]\nhow do I add a teammate?",
        },
    ]
    assert answer_for(chat) == (
        "ANSWER for Jane Doe | activity: [4] click: User clicked Invite member button on the "
        "team page — http://a/team | q: how do I add a teammate?"
    )
    bare = [
        {"role": "system", "content": "x"},
        {"role": "user", "content": "[CURRENT USER MESSAGE]\nhi"},
    ]
    assert answer_for(bare) == "ANSWER for (unknown) | activity: (none) | q: hi"
    actions = "Actions:\n1. [0] click: a — u\n2. [1] click: b — u\n\nSummary:"
    summary = [{"role": "user", "content": actions}]
    assert answer_for(summary) == "SUMMARY of 2 actions; last: [1] click: b — u"
