"""The README documents every setting and every event column (so the docs cannot drift)."""

from __future__ import annotations

from pathlib import Path

from receiver.settings import Settings
from receiver.storage.store import EVENT_COLUMNS

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


DOCS_DIR = Path(__file__).resolve().parent.parent / "docs"
DOCS = "\n".join(p.read_text() for p in sorted(DOCS_DIR.glob("*.md")))


def test_every_setting_is_in_the_configuration_table() -> None:
    # The README's table, or a table row of a docs/ page (docs/security.md holds the limits).
    missing = [f"RECEIVER_{name.upper()}" for name in Settings.model_fields
               if f"`RECEIVER_{name.upper()}`" not in README
               and f"| `RECEIVER_{name.upper()}`" not in DOCS and f"/ `RECEIVER_{name.upper()}`" not in DOCS]
    assert missing == []


def test_every_event_column_is_documented() -> None:
    missing = [name for name in EVENT_COLUMNS if f"| `{name}` |" not in README]
    assert missing == []


def test_readme_starts_with_the_two_commands() -> None:
    quickstart = README.split("## Quickstart", 1)[1].split("##", 1)[0]
    assert "make run" in quickstart and "make test" in quickstart
