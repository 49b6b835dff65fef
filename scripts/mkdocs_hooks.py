"""MkDocs hooks (``hooks:`` in mkdocs.yml), run at every build of the documentation site.

* The reference pages (``reference/*.md``) are rendered from the code (``docs_reference``).
* Screenshots the browser tests took (``build/screenshots/*.png``, git-ignored) are added as
  ``screenshots/<name>.png``. A page that shows one that has not been taken yet gets a note
  saying how to take it, so a fresh clone still builds with ``--strict`` and shows no broken image.
* ``<!-- include: path -->`` includes a file of the repository (headings one level down), so a
  guide kept next to its code (``posthog/SETUP.md``) is also a page of the site; the files it
  links to are published next to the page.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

try:  # loaded by MkDocs from its path, with scripts/ on sys.path
    import docs_reference
except ImportError:  # imported as scripts.mkdocs_hooks (by the tests)
    from scripts import docs_reference

ROOT = Path(__file__).resolve().parent.parent
# Repository files published at the site's root, for the pages (and included guides) linking them.
PUBLISHED = {
    "destination.hog": "posthog/destination.hog",
    "tutorial.hog": "posthog/tutorial.hog",
}
INCLUDE = re.compile(r"^<!-- include: (?P<path>[\w./-]+) -->$", re.M)
SCREENSHOT = re.compile(r"!\[(?P<alt>[^\]]*)\]\((?P<dots>(?:\.\./)*)screenshots/(?P<name>[\w.-]+\.png)\)")
FENCE = re.compile(r"^(```|~~~)")
DOCS_LINK = re.compile(r"\]\((?:\.\./)+docs/(?P<page>[\w-]+\.md(?:#[\w-]*)?)\)")


def screenshots_dir() -> Path:
    return Path(os.environ.get("DOCS_SCREENSHOTS_DIR") or ROOT / "build" / "screenshots")


def on_files(files: Files, config: Any) -> Files:
    for uri, render in docs_reference.PAGES.items():
        files.append(File.generated(config, uri, content=render()))
    for uri, repo_path in PUBLISHED.items():
        files.append(File.generated(config, uri, abs_src_path=str(ROOT / repo_path)))
    shots = screenshots_dir()
    if shots.is_dir():
        for png in sorted(shots.glob("*.png")):
            files.append(File.generated(config, f"screenshots/{png.name}", abs_src_path=str(png)))
    return files


def include(path: str) -> str:
    """A repository file without its title (the including page's heading replaces it), its other
    headings one level down (outside code blocks), and its links to ``docs/`` pages made relative
    to the site (on GitHub they are relative to the file: ``../docs/stream.md``)."""
    out, fenced = [], False
    lines = (ROOT / path).read_text().splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    for line in lines:
        if FENCE.match(line.lstrip()):
            fenced = not fenced
        if not fenced:
            line = DOCS_LINK.sub(r"](\g<page>)", line)
        out.append("#" + line if not fenced and line.startswith("#") else line)
    return "\n".join(out)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    markdown = INCLUDE.sub(lambda m: include(m.group("path")), markdown)

    def screenshot(m: re.Match[str]) -> str:
        if files.get_file_from_path(f"screenshots/{m.group('name')}") is not None:
            return m.group(0)
        return (
            f'!!! note "Screenshot: {m.group("alt")}"\n'
            f"    Not taken in this build. The browser tests take it (`make test` writes\n"
            f"    `build/screenshots/{m.group('name')}`); build the site again to see it here.\n"
        )

    return SCREENSHOT.sub(screenshot, markdown)
