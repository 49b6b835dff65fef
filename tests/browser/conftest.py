"""Fixtures for the browser tests live in ``browser.py`` (documented there)."""

import pytest

from tests.bridge.fixtures import register_plugins

from .browser import chromium, demo_app_factory, fake_capture  # noqa: F401


def pytest_configure(config: pytest.Config) -> None:
    # The fake LLM and the real-Rasa stack, shared with tests/rasa (one instance per session).
    register_plugins(config)
