"""Bridge tests: fixtures live in ``tests/bridge/fixtures.py`` and ``tests/fakes/llm.py``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# `python -m pytest` puts the repository root on sys.path; a bare `pytest` may not.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

# Our helper modules are imported before pytest registers them as plugins: rewrite them anyway.
pytest.register_assert_rewrite(*(m for m in ("tests.fakes", "tests.bridge") if m not in sys.modules))

from tests.bridge.fixtures import register_plugins  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    register_plugins(config)
