"""Tier 1: consistency of the Rasa bot's files, without Rasa (PyYAML + ast, ~0.1 s).

A complement to ``rasa data validate`` (Tier 2), which needs the 3.10 venv: every intent,
action and response used is declared, the domain's actions are exactly the ``name()`` literals
in actions.py, and the channel/endpoint settings the widget and the action server depend on
are in place. ``check_bot`` is also run on a deliberately broken copy to prove it catches errors.
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.rasa.rasa_env import BOT, ROOT

# Intents and actions Rasa provides itself.
BUILTIN_INTENTS = {"nlu_fallback", "restart", "back", "out_of_scope", "session_start"}
BUILTIN_ACTIONS = {
    "action_listen",
    "action_restart",
    "action_session_start",
    "action_default_fallback",
    "action_deactivate_loop",
    "action_revert_fallback_events",
    "action_default_ask_affirmation",
    "action_default_ask_rephrase",
    "action_back",
    "action_two_stage_fallback",
    "action_unlikely_intent",
    "action_extract_slots",
}
TRAINING_FILES = ("data/nlu.yml", "data/rules.yml", "data/stories.yml", "tests/test_stories.yml")


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) or {}


def _names(items: list[Any]) -> set[str]:
    """Domain lists may hold plain names or one-key mappings (``- greet: {...}``)."""
    out: set[str] = set()
    for item in items or []:
        out.update(item.keys() if isinstance(item, dict) else [str(item)])
    return out


def action_name_literals(actions_dir: Path) -> set[str]:
    """The string each ``def name(self)`` returns, across actions/*.py."""
    found: set[str] = set()
    for py in sorted(actions_dir.glob("*.py")):
        for node in ast.walk(ast.parse(py.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name == "name":
                for ret in ast.walk(node):
                    if isinstance(ret, ast.Return) and isinstance(ret.value, ast.Constant):
                        found.add(str(ret.value.value))
    return found


def _steps(doc: dict[str, Any], key: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (block.get("rule") or block.get("story") or "?", step)
        for block in doc.get(key) or []
        for step in block.get("steps") or []
    ]


def check_bot(bot: Path) -> list[str]:
    """Every inconsistency found, as readable messages ([] when the bot is consistent)."""
    errors: list[str] = []
    domain = _load(bot / "domain.yml")
    intents = _names(domain.get("intents", []))
    responses = set((domain.get("responses") or {}).keys())
    actions = _names(domain.get("actions", []))

    for rel in ("domain.yml", *TRAINING_FILES):
        if str(_load(bot / rel).get("version")) != "3.1":
            errors.append(f'{rel}: version must be "3.1"')

    nlu = _load(bot / "data/nlu.yml")
    examples: dict[str, int] = {}
    for block in nlu.get("nlu") or []:
        if "intent" in block:
            lines = [x for x in str(block.get("examples", "")).splitlines() if x.strip()]
            examples[block["intent"]] = len(lines)
    for intent in sorted(set(examples) - intents):
        errors.append(f"nlu.yml: intent {intent!r} is not declared in the domain")
    for intent in sorted(intents - BUILTIN_INTENTS):
        if examples.get(intent, 0) < 2:
            errors.append(f"nlu.yml: intent {intent!r} needs at least two examples")

    for rel, key in (
        ("data/rules.yml", "rules"),
        ("data/stories.yml", "stories"),
        ("tests/test_stories.yml", "stories"),
    ):
        for block, step in _steps(_load(bot / rel), key):
            if "intent" in step and step["intent"] not in intents:
                errors.append(f"{rel} [{block}]: intent {step['intent']!r} is not declared")
            if "action" in step:
                action = step["action"]
                if action.startswith("utter_"):
                    if action not in responses:
                        errors.append(f"{rel} [{block}]: {action!r} has no response")
                elif action not in actions and action not in BUILTIN_ACTIONS:
                    errors.append(f"{rel} [{block}]: action {action!r} is not in the domain")

    defined = action_name_literals(bot / "actions")
    for name in sorted(actions - defined):
        errors.append(f"domain.yml: action {name!r} has no class in actions/ returning it")
    for name in sorted(defined - actions):
        errors.append(f"actions/: action {name!r} is not listed in domain.yml")

    credentials = _load(bot / "credentials.yml")
    if "rest" not in credentials:
        errors.append("credentials.yml: the rest channel is missing")
    socketio = credentials.get("socketio") or {}
    if socketio.get("metadata_key") != "customData":
        errors.append("credentials.yml: socketio.metadata_key must be customData")
    if socketio.get("session_persistence") is not True:
        errors.append("credentials.yml: socketio.session_persistence must be true")
    for key, value in (("user_message_evt", "user_uttered"), ("bot_message_evt", "bot_uttered")):
        if socketio.get(key) != value:
            errors.append(f"credentials.yml: socketio.{key} must be {value}")

    for rel, host in (("endpoints.yml", "localhost"), ("endpoints.docker.yml", "action-server")):
        url = ((_load(bot / rel).get("action_endpoint") or {}).get("url")) or ""
        if url != f"http://{host}:5055/webhook":
            errors.append(f"{rel}: action_endpoint.url should be http://{host}:5055/webhook")

    config = _load(bot / "config.yml")
    pipeline = {c.get("name") for c in config.get("pipeline") or []}
    policies = {p.get("name") for p in config.get("policies") or []}
    if "FallbackClassifier" not in pipeline:
        errors.append("config.yml: FallbackClassifier is needed for the nlu_fallback rule")
    if "RulePolicy" not in policies:
        errors.append("config.yml: RulePolicy is needed for rules.yml")
    return errors


def test_bot_files_are_consistent() -> None:
    assert check_bot(BOT) == []


def test_domain_actions_equal_the_action_classes() -> None:
    domain = _load(BOT / "domain.yml")
    assert _names(domain["actions"]) == action_name_literals(BOT / "actions") == {
        "action_ask_llm",
        "action_recent_activity",
        "action_help_current_page",
    }


def test_checker_catches_a_broken_bot(tmp_path: Path) -> None:
    broken = tmp_path / "rasa-bot"
    shutil.copytree(BOT, broken, ignore=shutil.ignore_patterns("models", "__pycache__"))
    rules = broken / "data/rules.yml"
    rules.write_text(rules.read_text().replace("action: action_ask_llm", "action: action_ask_lm"))
    stories = broken / "data/stories.yml"
    stories.write_text(stories.read_text().replace("intent: greet", "intent: greeet", 1))
    domain = broken / "domain.yml"
    domain.write_text(domain.read_text().replace("utter_goodbye:", "utter_bye:"))
    creds = broken / "credentials.yml"
    creds.write_text(creds.read_text().replace("metadata_key: customData", ""))
    actions = broken / "actions/actions.py"
    actions.write_text(actions.read_text().replace('"action_help_current_page"', '"action_help"'))

    errors = "\n".join(check_bot(broken))
    assert "'action_ask_lm' is not in the domain" in errors
    assert "intent 'greeet' is not declared" in errors
    assert "'utter_goodbye' has no response" in errors
    assert "metadata_key must be customData" in errors
    assert "'action_help_current_page' has no class" in errors
    assert "'action_help' is not listed in domain.yml" in errors


def _pins(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if m := re.fullmatch(r"([A-Za-z0-9_.\-\[\]]+)==(\S+)", line):
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def test_requirements_are_pinned_and_agree_with_the_constraints() -> None:
    req = _pins(BOT / "requirements.txt")
    assert req["rasa"] == "3.6.21"
    assert req["rasa-sdk"] == "3.6.2"
    # From 5.10 on, Rasa 3.6 never joins the socketio room: the widget gets no replies.
    assert req["python-socketio"] == "5.8.0"
    assert "httpx" in req  # the actions need it; rasa-sdk does not depend on it
    constraints = _pins(BOT / "constraints.txt")
    assert len(constraints) > 100  # a full freeze, not a sketch
    for name, version in req.items():
        if name in constraints:
            assert constraints[name] == version, name


def test_constraints_match_the_reference_freeze_when_available() -> None:
    reference = Path("/work/shared/reference/fixtures/rasa-py310-requirements.txt")
    if not reference.is_file():
        pytest.skip("reference freeze not on this machine")
    assert (BOT / "constraints.txt").read_text() == reference.read_text()


def test_trained_models_are_not_committed() -> None:
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "rasa-bot/models/" in ignored
    assert ".rasa-models/" in ignored
