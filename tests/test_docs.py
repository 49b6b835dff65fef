"""The README documents every setting and every event column (so the docs cannot drift)."""

from __future__ import annotations

from pathlib import Path

from receiver.settings import Settings
from receiver.storage.store import EVENT_COLUMNS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
# The front page or a feature's own page (docs/, e.g. docs/push.md for the push settings).
DOCUMENTED = README + "".join(p.read_text() for p in sorted((ROOT / "docs").glob("*.md")))


def test_every_setting_is_in_the_configuration_table() -> None:
    missing = [f"RECEIVER_{name.upper()}" for name in Settings.model_fields
               if f"`RECEIVER_{name.upper()}`" not in DOCUMENTED]
    assert missing == []


def test_every_event_column_is_documented() -> None:
    missing = [name for name in EVENT_COLUMNS
               if f"| `{name}` |" not in README and f"`events.{name}`" not in DOCUMENTED]
    assert missing == []


def test_readme_starts_with_the_two_commands() -> None:
    quickstart = README.split("## Quickstart", 1)[1].split("##", 1)[0]
    assert "make run" in quickstart and "make test" in quickstart
