"""Run code against the stock autoplay-sdk 0.13.0 in ``.venv-sdk013`` (``scripts/sdk013-venv.sh``).

The project venv holds 0.7.2 (the tutorial's SDK); 0.13.0 cannot share it, so tests hand a script to
that venv's interpreter and read its JSON answer from stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("SDK013_VENV", ROOT / ".venv-sdk013"))
PYTHON = VENV / "bin" / "python"


def require() -> Path:
    """The 0.13.0 interpreter; fails under CI (and skips elsewhere) when the venv is missing."""
    if not PYTHON.exists():
        message = f"no {VENV}: `make test` (scripts/sdk013-venv.sh) builds it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return PYTHON


def run(script: str, *, env: dict[str, str] | None = None, timeout: float = 60) -> Any:
    """Run ``script`` with the 0.13.0 interpreter; it must print one JSON document last."""
    proc = subprocess.run(
        [str(require()), "-c", script], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})}, cwd=ROOT,
    )
    assert proc.returncode == 0, f"0.13.0 script failed:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])
