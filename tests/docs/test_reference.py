"""What the generated reference pages render is complete: every setting has a description,
every command and option a help text, every column of the event table and its views a comment.

The pages themselves are rendered from these sources at build time, so they cannot drift; these
checks make sure there is something to render. Each checker is also run on a broken example, to
show it can fail.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa
from pydantic import Field
from pydantic_settings import BaseSettings

from bridge.cli import _parser as bridge_parser
from bridge.settings import BridgeSettings
from receiver import cli
from receiver.settings import Settings
from receiver.storage import store
from scripts import docs_reference

ROOT = Path(__file__).resolve().parents[2]


def undescribed_settings(model: type[BaseSettings]) -> list[str]:
    return [name for name, field in model.model_fields.items() if not (field.description or "").strip()]


def commands_without_help(parser: argparse.ArgumentParser, prog: str) -> list[str]:
    missing = []
    for path, help_text, sub in docs_reference.walk(parser, prog):
        if path != prog and not help_text.strip():
            missing.append(path)
        for action in docs_reference.options(sub):
            if not (action.help or "").strip() or action.help == argparse.SUPPRESS:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    return missing


def uncommented_event_columns(metadata: sa.MetaData) -> list[str]:
    return [c.name for c in metadata.tables["events"].columns if not (c.comment or "").strip()]


def test_every_setting_has_a_description() -> None:
    assert undescribed_settings(Settings) == []
    assert undescribed_settings(BridgeSettings) == []

    class Careless(BaseSettings):
        documented: int = Field(default=1, description="Has one.")
        forgotten: int = 2

    assert undescribed_settings(Careless) == ["forgotten"]


def test_every_command_and_option_has_help() -> None:
    assert commands_without_help(cli.build_parser(), "receiver") == []
    assert commands_without_help(bridge_parser(), "bridge") == []

    careless = argparse.ArgumentParser(prog="x")
    sub = careless.add_subparsers(dest="cmd")
    run = sub.add_parser("run", help="runs")
    run.add_argument("--fast")
    sub.add_parser("walk")
    assert commands_without_help(careless, "x") == ["x run --fast", "x walk"]


def test_every_event_column_and_view_column_has_a_comment() -> None:
    assert uncommented_event_columns(store.metadata) == []
    views = docs_reference.migration_views()
    assert set(views) == {"pageviews", "clicks", "sessions", "daily_activity"}
    for name, (_, comment, columns) in views.items():
        assert comment.strip(), name
        assert all(text.strip() for text in columns.values()), name

    careless = sa.MetaData()
    sa.Table("events", careless, sa.Column("a", sa.Text, comment="A."), sa.Column("b", sa.Text))
    assert uncommented_event_columns(careless) == ["b"]


def test_receiver_help_speaks_to_users_not_developers() -> None:
    res = subprocess.run([str(Path(sys.executable).parent / "receiver"), "--help"],
                         capture_output=True, text=True, timeout=30, check=True)
    developer_line = cli.__doc__.strip().splitlines()[0]
    assert "parse arguments" in developer_line  # the module docstring is for developers...
    assert developer_line not in res.stdout  # ...and --help does not show it
    assert "First steps" in res.stdout and "product create" in res.stdout
    assert res.stderr == ""
    for command in ("serve", "migrate", "product", "sql", "db", "erase"):
        assert command in res.stdout


def test_nothing_generated_is_committed() -> None:
    tracked = subprocess.run(["git", "ls-files", "docs"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    generated = set(docs_reference.PAGES)
    assert not generated & {path.removeprefix("docs/") for path in tracked}
    assert not any(path.endswith(".png") and "screenshot" in path for path in tracked)
