"""Fixtures for tests that need a live bridge, registered as a plugin by the conftests of
tests/bridge and tests/rasa (see ``register_plugins``).

* ``start_bridge(product, **settings_overrides)``: a running bridge (stopped at teardown);
* ``product``: a fresh product on the real receiver from tests/conftest.py;
* ``fake_llm`` / ``fake_llm_server`` come from ``tests.fakes.llm``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.bridge.helpers import LiveBridge, Product, StartBridge, bridge_settings
from tests.fakes.llm import FakeLLM

PLUGINS = ("tests.fakes.llm", "tests.bridge.fixtures", "tests.rasa.stack")


def register_plugins(config: pytest.Config) -> None:
    # Plugins rather than names imported into each conftest: the session-scoped fake LLM is then
    # one server shared by every test directory, whichever conftest loads first.
    for name in PLUGINS:
        if not config.pluginmanager.has_plugin(name):
            config.pluginmanager.import_plugin(name)


def as_product(p: Any) -> Product:
    """Our view of a product made by tests/conftest.py's ``make_product``."""
    return Product(
        receiver_url=p.base_url,
        product_id=p.product_id,
        webhook_secret=p.webhook_secret,
        stream_key=p.stream_key,
        mcp_key=p.raw["mcp_key"],
    )


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
    return as_product(make_product())
