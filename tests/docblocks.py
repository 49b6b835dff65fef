"""Fenced code blocks of the documentation, so tests run what the pages show (no copies to drift)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n`]*)$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str  # first word of the info string ("bash", "sql", "console", ...), "" when none
    info: str  # the whole info string (e.g. 'bash title="Create a product"')
    text: str  # the block's content, dedented by the fence's indentation

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def code_blocks(path: str | Path, lang: str | None = None) -> list[Block]:
    """Every fenced block of a Markdown file (``lang``: only blocks in that language)."""
    path = Path(path)
    if not path.is_absolute():
        path = ROOT / path
    lines = path.read_text().splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = m.group("indent"), m.group("fence"), m.group("info").strip()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines):
            closing = lines[i].strip()
            if closing.startswith(fence[0] * len(fence)) and not closing.strip(fence[0]):
                break
            line = lines[i]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            i += 1
        i += 1
        block_lang = info.split()[0].strip("{}.") if info else ""
        if lang is None or block_lang == lang:
            out.append(Block(path, start + 1, block_lang, info, "\n".join(body) + "\n"))
    return out


def one_block(path: str | Path, contains: str, lang: str | None = None) -> Block:
    """The single block of ``path`` whose text contains ``contains`` (fails loudly otherwise)."""
    found = [b for b in code_blocks(path, lang) if contains in b.text]
    assert len(found) == 1, f"{path}: expected one block containing {contains!r}, found {len(found)}"
    return found[0]
