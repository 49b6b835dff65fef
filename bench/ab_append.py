"""A/B of ``store.append`` against an older revision, interleaved on one durable cluster.

    python -m bench.ab_append --base 36f2bb5 --seconds 1.5 --rounds 4

Loads ``receiver/storage/store.py`` of ``--base`` from git as a separate module and times both
implementations on the same batches (only the time inside ``append`` counts), alternating
the order each round so load drift on a shared machine hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT
from bench.scenarios import _admin, _pendings


def load_base(rev: str) -> Any:
    # The module moved into receiver/storage/; older revisions have it at the top level.
    for candidate in ("receiver/storage/store.py", "receiver/store.py"):
        shown = subprocess.run(["git", "show", f"{rev}:{candidate}"], cwd=ROOT,
                               capture_output=True, text=True)
        if shown.returncode == 0:
            src = shown.stdout
            break
    else:
        raise SystemExit(f"no store module at {rev}")
    path = Path(tempfile.mkdtemp()) / "store_base.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("store_base", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["store_base"] = mod
    spec.loader.exec_module(mod)
    return mod


async def run(url: str, base: Any, secs: float, rounds: int, sizes: list[int]) -> str:
    from receiver.storage import store

    pool = await store.create_pool(url, max_size=2, timeout=30)
    res: dict[tuple[str, int], list[float]] = {}
    try:
        async with pool.acquire() as conn:
            for name in ("base", "head"):
                await conn.execute(
                    "INSERT INTO products (product_id, contact_email, capture_token) "
                    "VALUES ($1, 'a@example.com', $2)", name, f"tok-{name}",
                )
            seq = {"base": 0, "head": 0}
            impls = [("base", base), ("head", store)]
            for r in range(rounds):
                for size in sizes:
                    for name, mod in impls if r % 2 == 0 else impls[::-1]:
                        spent, n = 0.0, 0
                        while spent < secs:
                            chunk = _pendings(name, seq[name], size)
                            seq[name] += size
                            t = time.perf_counter()
                            await mod.append(conn, chunk)
                            spent += time.perf_counter() - t
                            n += size
                        res.setdefault((name, size), []).append(n / spent)
    finally:
        await pool.close()
    lines = [f"{'batch':>6} {'base ev/s (median)':>20} {'head ev/s (median)':>20} {'head/base':>10}"]
    for size in sizes:
        b = sorted(res[("base", size)])[len(res[("base", size)]) // 2]
        h = sorted(res[("head", size)])[len(res[("head", size)]) // 2]
        lines.append(f"{size:>6} {b:>20,.0f} {h:>20,.0f} {h / b:>10.2f}")
    return "\n".join(lines)


def main() -> None:
    from receiver.storage import devdb, migrate

    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True, help="git revision to compare against")
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--sizes", default="1,8,16,32,64,256,1000")
    args = parser.parse_args()
    base = load_base(args.base)
    root = Path(tempfile.mkdtemp(prefix="rcvab", dir="/tmp"))
    srv = devdb.server(root / "data", ephemeral=False)  # fsync + synchronous_commit on
    srv.start()
    try:
        asyncio.run(_admin(srv.dsn("postgres"), "CREATE DATABASE ab"))
        migrate.upgrade(srv.url("ab"))
        sizes = [int(x) for x in args.sizes.split(",")]
        print(asyncio.run(run(srv.url("ab"), base, args.seconds, args.rounds, sizes)))
    finally:
        srv.stop(mode="immediate")
        devdb.remove(root)


if __name__ == "__main__":
    main()
