"""Where the Rasa venv, the bot and the trained model live, and why a test must skip."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BOT = ROOT / "rasa-bot"
RASA_VENV = Path(os.environ.get("RASA_VENV", ROOT / ".venv-rasa"))
RASA_PYTHON = RASA_VENV / "bin" / "python"
RASA_BIN = RASA_VENV / "bin" / "rasa"
MODELS = Path(os.environ.get("RASA_MODELS_DIR", ROOT / ".rasa-models"))
MODEL = MODELS / "bot.tar.gz"

# Quiet, offline, deterministic-enough Rasa processes.
RASA_ENV = {
    "RASA_TELEMETRY_ENABLED": "false",
    "SQLALCHEMY_SILENCE_UBER_WARNING": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "PYTHONUNBUFFERED": "1",
}


def rasa_venv_missing() -> str | None:
    if not RASA_PYTHON.exists():
        return (
            f"no Rasa venv at {RASA_VENV}: scripts/rasa-venv.sh (run by `make test`) builds it "
            "when a Python 3.10 is available (PYENV_VERSION=3.10.13 python3.10 or python3.10)"
        )
    return None


def rasa_model_missing() -> str | None:
    missing = rasa_venv_missing()
    if missing:
        return missing
    if not MODEL.exists():
        return f"no trained model at {MODEL}: run scripts/rasa-venv.sh"
    return None
