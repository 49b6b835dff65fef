"""The reference pages of the documentation site, rendered from the code itself.

Each function returns one Markdown page, built from what the program really reads, so the pages
cannot drift from it: the settings models, the argparse parsers, the OpenAPI document and the
SQLAlchemy metadata plus the migrations' view definitions. ``scripts/mkdocs_hooks.py`` calls them
at build time; nothing generated is committed. Tests check the sources are complete (every
setting, option and column described) and that the built pages list all of them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from pydantic import AliasChoices, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parent.parent
GENERATED_NOTE = (
    "*Generated from the code at build time ({source}): edit the code, not this page.*\n"
)


def cell(text: object) -> str:
    """A Markdown table cell: one line, pipes escaped, and ``<x>`` outside code shown as text
    (not taken for an HTML tag)."""
    parts = " ".join(str(text).split()).replace("|", "\\|").split("`")
    for i in range(0, len(parts), 2):  # even parts are outside backtick spans
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)


# --------------------------------------------------------------------------- settings


def env_names(name: str, field: FieldInfo, prefix: str) -> list[str]:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    if isinstance(alias, str):
        return [alias]
    return [f"{prefix}{name}".upper()]


def type_name(annotation: Any) -> str:
    if get_origin(annotation) in (Union, types.UnionType):
        parts = [type_name(a) for a in get_args(annotation) if a is not type(None)]
        return " or ".join(parts)
    if annotation is SecretStr:
        return "secret"
    if annotation is Path:
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def bounds(field: FieldInfo) -> str:
    out = []
    for item in field.metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(item, attr, None)
            if value is not None:
                out.append(f"{sign} {value:,}" if isinstance(value, int) else f"{sign} {value}")
    return ", ".join(out)


def default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        return "unset" if not value.get_secret_value() else "(set)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int | float):
        return f"`{value:g}`" if isinstance(value, float) else f"`{value}`"
    return f"`{value}`"


def settings_table(model: type[BaseSettings]) -> str:
    prefix = str(model.model_config.get("env_prefix") or "")
    rows = ["| Variable | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for name, field in model.model_fields.items():
        names = env_names(name, field, prefix)
        shown = f"`{names[0]}`" + (
            "<br>also " + ", ".join(f"`{n}`" for n in names[1:]) if len(names) > 1 else ""
        )
        kind = type_name(field.annotation)
        if limits := bounds(field):
            kind += f" ({limits})"
        rows.append(
            f"| {shown} | {cell(kind)} | {cell(default_text(field))} | {cell(field.description or '')} |"
        )
    return "\n".join(rows) + "\n"


def settings_page() -> str:
    from bridge.settings import BridgeSettings
    from receiver.settings import Settings

    return "\n".join([
        "# Settings reference",
        "",
        GENERATED_NOTE.format(source="`receiver.settings.Settings`, `bridge.settings.BridgeSettings`"),
        "Every setting is an environment variable, read once at start (pydantic-settings). What to",
        "set for which deployment is explained in [Configuration](../configuration.md).",
        "",
        "## Receiver",
        "",
        "Read by `receiver serve` and by every other `receiver` command.",
        "",
        settings_table(Settings),
        "## Bridge",
        "",
        "Read by `bridge serve`, also from an env file (`--env-file`, default `.env`). The tutorial's",
        "names (`STREAM_URL`, `UNKEY_API_KEY`, `OPENAI_API_KEY`, …) work too; the `BRIDGE_*` name",
        "wins when both are set.",
        "",
        settings_table(BridgeSettings),
    ])


# --------------------------------------------------------------------------- command line


def subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    """(name, help, parser) of each direct subcommand."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name, ""), sub


def options(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    """The arguments and options a user types (not -h, not the subcommand slot)."""
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        yield action


def walk(parser: argparse.ArgumentParser, path: str, help_text: str = "") -> Iterator[
    tuple[str, str, argparse.ArgumentParser]
]:
    """Every command, parent first: (full command, its help, its parser)."""
    yield path, help_text, parser
    for name, sub_help, sub in subcommands(parser):
        yield from walk(sub, f"{path} {name}", sub_help)


def argument_name(action: argparse.Action) -> str:
    if action.option_strings:
        flags = ", ".join(action.option_strings)
        if action.nargs == 0:
            return f"`{flags}`"
        metavar = action.metavar or (
            "{" + ",".join(map(str, action.choices)) + "}" if action.choices else action.dest.upper()
        )
        return f"`{flags} {metavar}`"
    return f"`{action.metavar or action.dest}`"


def command_section(path: str, help_text: str, parser: argparse.ArgumentParser) -> str:
    level = "#" * min(path.count(" ") + 1, 4)
    lines = [f"#{level} `{path}`", ""]
    text = parser.description or help_text
    if text:
        lines += [text.replace("\n", " "), ""]
    lines += ["```text", parser.format_usage().strip(), "```", ""]
    args = list(options(parser))
    if args:
        lines += ["| Argument | Description |", "| --- | --- |"]
        for action in args:
            extra = " (required)" if action.required and action.option_strings else ""
            lines.append(f"| {argument_name(action)} | {cell((action.help or '') + extra)} |")
        lines.append("")
    subs = list(subcommands(parser))
    if subs:
        lines += ["| Command | What it does |", "| --- | --- |"]
        for name, sub_help, _ in subs:
            lines.append(f"| `{path} {name}` | {cell(sub_help)} |")
        lines.append("")
    return "\n".join(lines)


def cli_page() -> str:
    from bridge.cli import _parser as bridge_parser
    from receiver.cli import build_parser

    parts = [
        "# Command-line reference",
        "",
        GENERATED_NOTE.format(source="the argparse parsers of `receiver.cli` and `bridge.cli`"),
        "Both commands are installed into the virtualenv (`.venv/bin/receiver`, `.venv/bin/bridge`);",
        "they read their settings from the environment ([Settings](settings.md)).",
        "",
    ]
    for parser, prog in ((build_parser(), "receiver"), (bridge_parser(), "bridge")):
        for path, help_text, sub in walk(parser, prog):
            parts.append(command_section(path, help_text, sub))
    return "\n".join(parts)


# --------------------------------------------------------------------------- HTTP API


def _schema_name(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " or ".join(_schema_name(s) for s in schema["anyOf"])
    if schema.get("type") == "array":
        return f"array of {_schema_name(schema.get('items', {}))}"
    return str(schema.get("type", "any"))


def _operation_key(op: dict[str, Any]) -> str:
    same = {k: v for k, v in op.items() if k not in ("summary", "operationId")}
    return json.dumps(same, sort_keys=True)


def _operation(method: str, paths: list[str], op: dict[str, Any]) -> list[str]:
    lines = [f"### {method.upper()} `{paths[0]}`", ""]
    if len(paths) > 1:
        lines += ["Also at " + ", ".join(f"`{p}`" for p in paths[1:]) + ".", ""]
    if op.get("description"):
        lines += [op["description"].strip(), ""]
    params = op.get("parameters", [])
    if params:
        lines += ["| Parameter | In | Type | Required | Description |", "| --- | --- | --- | --- | --- |"]
        for p in params:
            lines.append(
                f"| `{p['name']}` | {p['in']} | {cell(_schema_name(p.get('schema', {})))} | "
                f"{'yes' if p.get('required') else 'no'} | {cell(p.get('description', ''))} |"
            )
        lines.append("")
    body = op.get("requestBody")
    if body:
        kinds = ", ".join(
            f"`{ctype}` ({_schema_name(c.get('schema', {}))})" for ctype, c in body["content"].items()
        )
        lines += [f"Request body: {kinds}.", ""]
    lines += ["| Status | Meaning | Body |", "| --- | --- | --- |"]
    for status, resp in op.get("responses", {}).items():
        content = resp.get("content", {})
        shape = ", ".join(
            f"`{ctype}`" + (f" {_schema_name(c['schema'])}" if c.get("schema") else "")
            for ctype, c in content.items()
        )
        lines.append(f"| {status} | {cell(resp.get('description', ''))} | {cell(shape)} |")
    lines.append("")
    return lines


def _schema_section(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"### `{name}`", ""]
    if schema.get("description"):
        lines += [schema["description"].strip(), ""]
    props = schema.get("properties", {})
    required = set(schema.get("required", []))
    if props:
        lines += ["| Field | Type | Required | Description |", "| --- | --- | --- | --- |"]
        for field, spec in props.items():
            lines.append(
                f"| `{field}` | {cell(_schema_name(spec))} | {'yes' if field in required else 'no'} | "
                f"{cell(spec.get('description', ''))} |"
            )
        lines.append("")
    return lines


def http_api_page(document: dict[str, Any] | None = None) -> str:
    if document is None:
        from receiver.app import create_app
        from receiver.settings import Settings

        document = create_app(Settings()).openapi()
    info = document["info"]
    lines = [
        "# HTTP API reference",
        "",
        GENERATED_NOTE.format(source="the OpenAPI document of `receiver.app.create_app`"),
        f"{info['title']} {info['version']}: {info.get('summary', '')}. A running receiver serves the",
        "same document at `/openapi.json` and an interactive explorer at `/docs`. The admin page's",
        "API and `/metrics` are described in [Operations](../operations.md).",
        "",
        "Every error answer is JSON `{\"detail\": …, \"code\": …}` ([`ErrorBody`](#errorbody)). "
        "No route redirects.",
        "",
        "## Operations",
        "",
    ]
    groups: dict[tuple[str, str], list[str]] = {}
    ops: dict[tuple[str, str], dict[str, Any]] = {}
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            key = (method, _operation_key(op))
            groups.setdefault(key, []).append(path)
            ops.setdefault(key, op)
    for key, paths in groups.items():
        lines += _operation(key[0], paths, ops[key])
    lines += ["## Schemas", ""]
    for name, schema in document.get("components", {}).get("schemas", {}).items():
        lines += _schema_section(name, schema)
    return "\n".join(lines)


# --------------------------------------------------------------------------- the event table


def migration_views() -> dict[str, tuple[str, str, dict[str, str]]]:
    """The analyst views as the migrations define them (a later migration's definition wins)."""
    views: dict[str, tuple[str, str, dict[str, str]]] = {}
    for path in sorted((ROOT / "migrations" / "versions").glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"_docs_migration_{path.stem}", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        views.update(getattr(module, "VIEWS", {}))
    return views


def _column_rows(table: Any) -> list[str]:
    from sqlalchemy.dialects import postgresql

    rows = ["| Column | Type | Description |", "| --- | --- | --- |"]
    for column in table.columns:
        kind = column.type.compile(dialect=postgresql.dialect()).lower()
        if not column.nullable:
            kind += " not null"
        rows.append(f"| `{column.name}` | {cell(kind)} | {cell(column.comment or '')} |")
    return rows


def event_table_page() -> str:
    from receiver.storage import sql, store

    tables = store.metadata.tables
    events = tables["events"]
    lines = [
        "# Event table reference",
        "",
        GENERATED_NOTE.format(source="the column comments of `receiver.storage.store` and the "
                              "migrations' view definitions"),
        "The same texts are Postgres comments on the columns: `\\d+ events` in `receiver sql` shows",
        "them. Example queries are on [The event table](../event-table.md).",
        "",
        "## `events`",
        "",
        f"{events.comment} Partitioned by day on `received_at`.",
        "",
        *_column_rows(events),
        "",
        "## Views",
        "",
        "Plain views over `events`, readable by the analysts' role (`receiver db grant-readonly`).",
        "",
    ]
    for name, (body, comment, columns) in migration_views().items():
        lines += [f"### `{name}`", "", comment, "", "| Column | Description |", "| --- | --- |"]
        lines += [f"| `{col}` | {cell(text)} |" for col, text in columns.items()]
        lines += ["", "```sql", f"-- the definition of {name}", _dedent(body), "```", ""]
    lines += [
        "## Bookkeeping tables",
        "",
        "The receiver's own tables, not a contract for analysts: their role cannot read them "
        f"(it reads only {', '.join(f'`{t}`' for t in sql.READABLE)}).",
        "",
        "| Table | What it holds |",
        "| --- | --- |",
    ]
    lines += [f"| `{name}` | {cell(t.comment or '')} |" for name, t in tables.items() if name != "events"]
    return "\n".join(lines) + "\n"


def _dedent(sql_text: str) -> str:
    import textwrap

    return textwrap.dedent(sql_text).strip()


PAGES = {
    "reference/settings.md": settings_page,
    "reference/cli.md": cli_page,
    "reference/http-api.md": http_api_page,
    "reference/event-table.md": event_table_page,
}
