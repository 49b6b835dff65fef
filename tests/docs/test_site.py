"""The documentation site builds with ``mkdocs build --strict``, every page and every generated
reference entry is in it, screenshots appear once taken, and a broken link or anchor fails."""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path

import pytest
import yaml

from bridge.settings import BridgeSettings
from receiver.app import create_app
from receiver.cli import build_parser
from receiver.settings import Settings
from receiver.storage import store
from scripts import docs_reference
from tests.docs.site import ROOT, build, config_with_docs, nav_pages

# The smallest valid PNG (1x1): the build copies screenshots, it does not read them.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One strict build, with the admin screenshot taken and the chat one not."""
    tmp = tmp_path_factory.mktemp("site")
    shots = tmp / "screenshots"
    shots.mkdir()
    (shots / "admin.png").write_bytes(PNG)
    res = build(tmp / "out", screenshots=shots)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "WARNING" not in res.stderr, res.stderr
    return tmp / "out"


def text(site: Path, page: str) -> str:
    """A built page's visible text: tags, backticks and whitespace dropped, entities decoded."""
    path = site / (page.removesuffix(".md").removesuffix("index") + "/index.html").lstrip("/")
    return squeeze(html.unescape(re.sub(r"<[^>]+>", "", path.read_text())))


def squeeze(value: str) -> str:
    return re.sub(r"[\s`]+", "", value)


def test_every_page_of_the_nav_is_built_and_every_page_is_in_the_nav(site: Path) -> None:
    nav = nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    assert len(nav) >= 18
    for page in nav:
        assert text(site, page).strip(), page
    written = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert written <= set(nav), written - set(nav)
    generated = set(docs_reference.PAGES)
    assert generated <= set(nav)
    # Generated pages are never committed: the build writes them, and only the build.
    assert not (ROOT / "docs" / "reference").exists()


def test_settings_reference_lists_every_setting_with_its_description(site: Path) -> None:
    page = text(site, "reference/settings.md")
    for model, prefix in ((Settings, "RECEIVER_"), (BridgeSettings, "")):
        for name, field in model.model_fields.items():
            env = docs_reference.env_names(name, field, prefix)[0]
            assert env in page, env
            assert squeeze(field.description) in page, env


def test_cli_reference_lists_every_command_and_option(site: Path) -> None:
    page = text(site, "reference/cli.md")
    for path, help_text, parser in docs_reference.walk(build_parser(), "receiver"):
        assert squeeze(path) in page, path
        assert squeeze(help_text) in page, path
        for action in docs_reference.options(parser):
            for flag in action.option_strings or [action.dest]:
                assert flag in page, (path, flag)
            assert squeeze(action.help) in page, (path, action.dest)
    assert "bridgeserve" in page and "--env-file" in page


def test_http_api_reference_lists_every_route(site: Path) -> None:
    page = text(site, "reference/http-api.md")
    document = create_app(Settings()).openapi()
    for path, methods in document["paths"].items():
        assert squeeze(path) in page, path
        for method in methods:
            assert method.upper() in page
    for schema in document["components"]["schemas"]:
        assert schema in page


def test_event_table_reference_lists_every_column_and_view(site: Path) -> None:
    page = text(site, "reference/event-table.md")
    for column in store.metadata.tables["events"].columns:
        assert squeeze(f"{column.name}") in page and squeeze(column.comment) in page, column.name
    for view, (_, comment, columns) in docs_reference.migration_views().items():
        assert view in page and squeeze(comment) in page
        for column, description in columns.items():
            assert squeeze(f"{column}{description}") in page, (view, column)
    for table in store.metadata.tables.values():
        assert table.name in page and squeeze(table.comment) in page


def test_a_screenshot_shows_when_taken_and_a_note_says_how_to_take_it_otherwise(site: Path) -> None:
    ops = (site / "operations" / "index.html").read_text()
    assert '<img alt="The admin page' in ops and 'src="../screenshots/admin.png"' in ops
    assert (site / "screenshots" / "admin.png").read_bytes() == PNG
    loop = (site / "rasa-loop" / "index.html").read_text()
    assert 'src="../screenshots/chat.png"' not in loop  # no broken image...
    assert "Not taken in this build" in html.unescape(loop)  # ...but a note that says why


def test_a_broken_link_or_anchor_fails_the_build(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs)
    config = config_with_docs(tmp_path, docs)
    res = build(tmp_path / "ok", config=config)
    assert res.returncode == 0, res.stderr  # the copy builds as the original does

    page = docs / "getting-started.md"
    original = page.read_text()
    page.write_text(original + "\nSee [the nowhere page](nowhere.md).\n")
    res = build(tmp_path / "link", config=config)
    assert res.returncode != 0
    assert "nowhere.md" in res.stderr and "Aborted" in res.stdout + res.stderr

    page.write_text(original + "\nSee [no such section](guarantees.md#no-such-section).\n")
    res = build(tmp_path / "anchor", config=config)
    assert res.returncode != 0
    assert "no-such-section" in res.stderr and "Aborted" in res.stdout + res.stderr


def test_readme_is_a_front_page_whose_links_all_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 160
    two = readme.split("## Two commands", 1)[1].split("##", 1)[0]
    assert "make run" in two and "make test" in two
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    assert len(targets) >= 10
    for target in targets:
        assert not target.startswith("http"), target  # the front page links into the repository
        assert (ROOT / target).exists(), target
    for section in ("### 1. Stream", "### 2. Pull", "### 3. Push"):
        assert section in readme
