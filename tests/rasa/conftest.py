"""Rasa tests: the bot's files, its actions under rasa-sdk 3.6.2, and real Rasa 3.6.21.

Everything Rasa-specific runs in ``.venv-rasa`` (Python 3.10, built by scripts/rasa-venv.sh);
the tests themselves run in the project's 3.11 venv and drive those programs from outside.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.unavailable import unavailable

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_OURS = ("tests.fakes", "tests.bridge", "tests.rasa")
pytest.register_assert_rewrite(*(m for m in _OURS if m not in sys.modules))

from tests.bridge.fixtures import register_plugins  # noqa: E402
from tests.rasa.rasa_env import RASA_PYTHON, rasa_venv_missing  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    register_plugins(config)


@pytest.fixture(scope="session")
def rasa_python() -> Path:
    """The 3.10 interpreter with rasa + rasa-sdk 3.6.2; skips when it was not built."""
    reason = rasa_venv_missing()
    if reason:
        unavailable(reason)
    return RASA_PYTHON
