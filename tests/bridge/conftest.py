"""Fixtures for the bridge tests: the fake LLM, live bridges, and products on a real receiver."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# `python -m pytest` puts the repository root on sys.path; a bare `pytest` may not.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

# Helpers and fakes are imported below, before pytest would register them itself.
pytest.register_assert_rewrite("tests.fakes", "tests.bridge.helpers")

from tests.bridge.helpers import LiveBridge, Product, StartBridge, bridge_settings  # noqa: E402
from tests.fakes.llm import FakeLLM  # noqa: E402

FAKES_PLUGIN = "tests.fakes.llm"


def pytest_configure(config: pytest.Config) -> None:
    # Registered as a plugin (not imported into this module) so the session-scoped fake LLM is
    # one server shared by tests/bridge and tests/rasa, whichever conftest loads first.
    if not config.pluginmanager.has_plugin(FAKES_PLUGIN):
        config.pluginmanager.import_plugin(FAKES_PLUGIN)


@pytest.fixture
def start_bridge(fake_llm: FakeLLM) -> Iterator[StartBridge]:
    """``start_bridge(product, **settings_overrides)`` → a running :class:`LiveBridge`.

    Every bridge started through this fixture is stopped at teardown (also on failure).
    """
    started: list[LiveBridge] = []

    def _start(product: Product | None, **overrides: Any) -> LiveBridge:
        bridge = LiveBridge(bridge_settings(product, fake_llm, **overrides)).start()
        started.append(bridge)
        return bridge

    yield _start
    for bridge in reversed(started):
        bridge.stop()


@pytest.fixture
def product(make_product: Callable[..., Any]) -> Product:
    """A fresh product on a real receiver (tests/conftest.py: throwaway Postgres)."""
    p = make_product()
    return Product(
        receiver_url=p.base_url,
        product_id=p.product_id,
        webhook_secret=p.webhook_secret,
        stream_key=p.stream_key,
    )
