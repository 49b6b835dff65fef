"""Every command, query or snippet shown in the documentation is run by a test, or says why not.

A test "runs" a block by reading it out of its page with ``tests/docblocks.py``:
``one_block("docs/page.md", "text only that block has")`` or ``code_blocks("docs/page.md", "sql")``
with the page as a literal string. This module finds those calls in the test sources (no test is
imported or run) and fails on any block of a checked language that none of them selects, unless
the block's title gives one of the reasons below. So a new page cannot show an untested command
unnoticed.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.docblocks import Block, code_blocks

ROOT = Path(__file__).resolve().parents[2]
CHECKED = {"bash", "console", "sh", "shell", "sql", "python"}
# Why a block may stay unrun: its title starts with one of these (```bash title="needs Docker").
NOT_RUNNABLE_HERE = {
    "needs Docker": "these machines have no Docker engine (tests/test_compose.py checks the file)",
    "needs PostHog Cloud": "PostHog must reach the receiver over the internet",
    "runs for minutes": "`make bench` is measured on purpose outside `make test`",
    # Debt, not a reason: tests/rasa and tests/browser start the same services their own way,
    # but nothing runs these blocks as written yet. Shown to readers, so it cannot be forgotten.
    "not run by a test yet": "make demo (tests/rasa and tests/browser start its services their own "
    "way, and tests/rasa/test_docs_manual_stack.py runs the service-by-service steps)",
}
_TITLE = re.compile(r'title="([^"]*)"')


def pages() -> list[Path]:
    """What a reader sees: the README, every page of the site, and the files pages include."""
    docs = sorted((ROOT / "docs").rglob("*.md"))
    included = [
        ROOT / m.group(1)
        for page in docs
        for m in re.finditer(r"^<!-- include: ([\w./-]+) -->$", page.read_text(), re.M)
    ]
    return [ROOT / "README.md", *docs, *included]


def _page(node: ast.expr, constants: dict[str, str]) -> str | None:
    """A page argument as the tests write it: "docs/x.md", a module constant holding it
    (PAGE = "docs/x.md"), or a path built from the repository root (ROOT / "docs" / "x.md")."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return "" if node.id == "ROOT" else constants.get(node.id)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        left, right = _page(node.left, constants), _page(node.right, constants)
        if left is None or right is None:
            return None
        return f"{left}/{right}" if left else right
    return None


def _constants(tree: ast.Module) -> dict[str, str]:
    out: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            value = _page(node.value, out)
            if value is not None:
                out[node.targets[0].id] = value
    return out


def selections() -> list[tuple[str, str | None, str | None]]:
    """(page, contains, lang) of every one_block/code_blocks call in the tests whose page is a
    literal or a module constant."""
    found = []
    for source in sorted((ROOT / "tests").rglob("*.py")):
        tree = ast.parse(source.read_text(), str(source))
        constants = _constants(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute)):
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
            if name not in ("one_block", "code_blocks") or not node.args:
                continue
            literal = [a.value if isinstance(a, ast.Constant) else None for a in node.args]
            keywords = {k.arg: k.value.value for k in node.keywords if isinstance(k.value, ast.Constant)}
            page = _page(node.args[0], constants)
            if not isinstance(page, str):
                continue
            if name == "one_block":
                contains = literal[1] if len(literal) > 1 else keywords.get("contains")
                lang = literal[2] if len(literal) > 2 else keywords.get("lang")
                found.append((page, contains, lang))
            else:
                lang = literal[1] if len(literal) > 1 else keywords.get("lang")
                found.append((page, None, lang))
    return found


def selected(block: Block, chosen: list[tuple[str, str | None, str | None]]) -> bool:
    where = str(block.path.relative_to(ROOT))
    return any(
        page == where and lang in (None, block.lang) and (contains is None or contains in block.text)
        for page, contains, lang in chosen
    )


def reason(block: Block) -> str | None:
    m = _TITLE.search(block.info)
    if m and any(m.group(1).startswith(prefix) for prefix in NOT_RUNNABLE_HERE):
        return m.group(1)
    return None


def unrun(chosen: list[tuple[str, str | None, str | None]]) -> list[str]:
    return [
        f"{block.where()} ({block.lang}): {block.text.splitlines()[0] if block.text.strip() else ''}"
        for path in pages()
        for block in code_blocks(path)
        if block.lang in CHECKED and not selected(block, chosen) and reason(block) is None
    ]


def test_every_documented_command_is_run_by_a_test_or_says_why_not() -> None:
    assert unrun(selections()) == []


def test_the_check_finds_an_unrun_block_and_accepts_a_stated_reason(tmp_path: Path) -> None:
    page = ROOT / "docs" / "getting-started.md"
    blocks = [b for b in code_blocks(page) if b.lang in CHECKED]
    assert blocks, "the page shows commands"
    # Without the tests' selections, every block of the page is reported...
    reported = [line for line in unrun([]) if line.startswith("docs/getting-started.md:")]
    assert len(reported) == len(blocks)
    # ...and a title from the list is an accepted reason, any other title is not.
    assert reason(Block(page, 1, "bash", 'bash title="needs Docker"', "docker compose up\n"))
    assert reason(Block(page, 1, "bash", 'bash title="trust me"', "rm -rf /\n")) is None


def test_every_selection_in_the_tests_finds_its_block() -> None:
    """A test whose block was edited away must not keep 'covering' nothing."""
    for page, contains, lang in selections():
        if contains is None:
            assert code_blocks(page, lang), (page, lang)
        else:
            assert [b for b in code_blocks(page, lang) if contains in b.text], (page, contains)
