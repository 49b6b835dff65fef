"""A new user's first hour, from a fresh checkout: the documented ``make run`` and ``product
create`` print exactly what Getting started shows, and ``make docs`` serves the site; nothing
else: no pip or setuptools warning, no log line, no traceback.

The checkout is a copy of the work tree's files (tracked and not ignored) into a fresh directory,
so ``make run`` creates its own virtualenv and installs only the runtime dependencies there.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.docblocks import one_block
from tests.docs.test_page_commands import NOISE, lines_until

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def user_env(**extra: str) -> dict[str, str]:
    """A new user's shell: no virtualenv active, nothing of ours set, not inside `make test`
    (a make under make announces the directories it enters)."""
    venv_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RECEIVER_", "BRIDGE_", "VIRTUAL_ENV", "PYTEST", "NO_MKDOCS", "MAKE"))
           and k != "MFLAGS"}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env.update(extra)
    return env


@pytest.fixture
def checkout() -> Iterator[Path]:
    # Under /tmp, world-enterable: the embedded Postgres runs as an unprivileged user when root.
    root = Path(tempfile.mkdtemp(prefix="first-hour-", dir="/tmp"))
    root.chmod(0o755)
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
        capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / name)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def get_when_up(proc: subprocess.Popen[bytes], url: str, deadline_s: float) -> httpx.Response:
    """GET ``url`` once the server answers; between tries, wait on the server's exit instead."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            return httpx.get(url, timeout=5)
        except httpx.TransportError:
            assert time.monotonic() < end, f"{url} never answered"
            try:
                proc.wait(timeout=0.25)
            except subprocess.TimeoutExpired:
                continue
            raise AssertionError(f"the server exited ({proc.returncode}) before {url} answered") from None


def first_line(block_text: str) -> str:
    return block_text.strip().splitlines()[0].split("#")[0].strip()


def test_make_run_and_product_create_print_only_what_the_page_shows(checkout: Path) -> None:
    command = one_block("docs/getting-started.md", "make run", "bash").text.strip()
    assert command == "make run"
    # The front pages show the same two commands; `make test` is this suite itself.
    fronts = (one_block("README.md", "make run", "bash"), one_block("docs/index.md", "make run", "bash"))
    for page_block in fronts:
        lines = page_block.text.strip().splitlines()
        assert [first_line(line) for line in lines] == ["make run", "make test"], page_block.where()

    port, pg_port = free_port(), free_port()
    env = user_env(RECEIVER_PORT=str(port), RECEIVER_EMBEDDED_PG_PORT=str(pg_port))
    proc = subprocess.Popen(["bash", "-c", command], cwd=checkout, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # The first run installs the receiver into a new .venv: pip, from the registries.
        seen = lines_until(proc, "Ctrl-C stops the receiver.", 600)
        shown = one_block("docs/getting-started.md", "receiver listening on", "text").text
        expected = (shown.replace("<checkout>", str(checkout)).replace(":54329", f":{pg_port}")
                    .replace(":8000", f":{port}").strip().splitlines())
        assert seen == expected

        # The banner comes as uvicorn binds the socket: the first request may need a moment.
        assert get_when_up(proc, f"http://127.0.0.1:{port}/readyz", 30).status_code == 200

        # In another terminal, as the receiver says:
        create = one_block("docs/getting-started.md", ".venv/bin/receiver product create my-app",
                           "bash").text
        assert create.strip() in seen[-2]
        res = subprocess.run(["bash", "-c", create], cwd=checkout, env=env, capture_output=True,
                             text=True, timeout=120, check=False)
        assert res.returncode == 0, res.stderr
        assert res.stderr == ""
        assert not NOISE.search(res.stdout), res.stdout
        documented = one_block("docs/getting-started.md", "Save these now", "text").text
        keys = [line.split()[0] for line in documented.splitlines()[2:11]]
        printed = res.stdout.splitlines()
        assert printed[0] == documented.splitlines()[0]
        assert [line.split()[0] for line in printed[2:11]] == keys
        assert f"URL http://127.0.0.1:{port}/webhook/my-app" in res.stdout
        assert "Next, paste them where they go" in res.stdout
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal
        rest, _ = proc.communicate(timeout=60)
    # make passes Ctrl-C on to itself once its recipe has exited (a shell shows status 130); the
    # receiver stops cleanly and says only that the embedded Postgres stopped with it.
    assert proc.returncode in (0, -signal.SIGINT)
    assert rest.decode().splitlines() == ["embedded postgres stopped"]
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_make_docs_serves_the_site_quietly() -> None:
    block = one_block("docs/development.md", "make docs", "bash")
    lines = [first_line(line) for line in block.text.strip().splitlines()]
    assert lines == ["make test", "make docs"]  # `make test` is this suite itself
    port = free_port()
    # `make test` installed the docs toolchain into the work tree's .venv before the suite ran.
    proc = subprocess.Popen(["bash", "-c", lines[1]], cwd=ROOT, env=user_env(DOCS_PORT=str(port)),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        seen = lines_until(proc, "Documentation site on", 60)
        assert seen == [f"Documentation site on http://127.0.0.1:{port}/ (rebuilds on change; "
                        "Ctrl-C stops it)"]
        for path, text in {"": "autoplay receiver", "reference/settings/": "RECEIVER_PORT"}.items():
            r = get_when_up(proc, f"http://127.0.0.1:{port}/{path}", 60)
            assert r.status_code == 200 and text in r.text, path
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    assert rest.decode().strip() == "", rest.decode()
