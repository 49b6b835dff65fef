"""Skip locally when a heavy dependency is missing; fail in CI, where `.ci/run` installs it.

Locally a developer without Debian's chromium or a Python 3.10 still gets a useful run; in CI
(``CI`` set) a silent skip would let the browser or real-Rasa tiers vanish unnoticed.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def unavailable(reason: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"{reason} (CI installs this: see scripts/browser-deps.sh, scripts/rasa-venv.sh, "
                    "scripts/ha-deps.sh)", pytrace=False)
    pytest.skip(reason)
