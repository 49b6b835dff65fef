"""Building the documentation site as `make docs-build` does: `mkdocs build --strict`, in a
subprocess, into a directory the test owns."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
MKDOCS = str(Path(sys.executable).parent / "mkdocs")


def build(site_dir: Path, *, config: Path = ROOT / "mkdocs.yml", screenshots: Path | None = None,
          timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECEIVER_")}
    env["NO_MKDOCS_2_WARNING"] = "1"  # Material's end-of-life banner, printed on every build
    if screenshots is not None:
        env["DOCS_SCREENSHOTS_DIR"] = str(screenshots)
    return subprocess.run(
        [MKDOCS, "build", "--strict", "--config-file", str(config), "--site-dir", str(site_dir)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )


def config_with_docs(tmp: Path, docs_dir: Path) -> Path:
    """The project's mkdocs.yml pointed at another docs directory (same hooks, same checks)."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    config["docs_dir"] = str(docs_dir)
    config["hooks"] = [str(ROOT / h) for h in config["hooks"]]
    path = tmp / "mkdocs.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def nav_pages(nav: list) -> list[str]:
    out: list[str] = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        out.extend(nav_pages(value) if isinstance(value, list) else [value])
    return out
