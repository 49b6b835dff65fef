"""Paths and loaders for the Hog script fixtures, shared by tests that run the scripts.

A later receiver test can do ``request_for(destination_source(), event["globals"])`` for each
event here and post the resulting (url, headers, body) to a live app.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DESTINATION_HOG = REPO / "posthog" / "destination.hog"
TUTORIAL_HOG = REPO / "posthog" / "tutorial.hog"
EVENTS_JSON = REPO / "tests" / "data" / "posthog_events.json"
CHAINS_JSON = REPO / "tests" / "data" / "elements_chains.json"


@cache
def destination_source() -> str:
    return DESTINATION_HOG.read_text(encoding="utf-8")


@cache
def tutorial_source() -> str:
    return TUTORIAL_HOG.read_text(encoding="utf-8")


def load_events() -> list[dict[str, Any]]:
    """Destination globals per event: {name, chain_case, globals, tutorial} (fresh copy)."""
    return list(json.loads(EVENTS_JSON.read_text(encoding="utf-8")))


def load_chains() -> dict[str, dict[str, Any]]:
    """The elements_chain corpus keyed by case name."""
    cases = json.loads(CHAINS_JSON.read_text(encoding="utf-8"))
    return {case["name"]: case for case in cases}
