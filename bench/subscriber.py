"""Stock ``autoplay_sdk.AsyncConnectorClient`` subscribers, run as their own process.

Each callback records ``now - actions[0].timestamp_start``: the webhook body's ``timestamp``
is the load generator's scheduled send time, so this is POST-to-callback latency (same
machine, same wall clock). Prints ``READY <n>`` once every client is connected, then waits
for a line on stdin and writes its samples to ``--out``.

    python -m bench.subscriber --targets subs.json --out out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path

from autoplay_sdk import ActionsPayload, AsyncConnectorClient


async def run(args: argparse.Namespace) -> None:
    targets = json.loads(Path(args.targets).read_text())  # noqa: ASYNC240 - at startup
    samples: list[tuple[float, float]] = []
    connected: set[int] = set()
    all_up = asyncio.Event()

    async def on_actions(payload: ActionsPayload) -> None:
        now = time.time()
        for a in payload.actions:
            samples.append((a.timestamp_start, now - a.timestamp_start))

    clients = []
    for k, t in enumerate(targets):

        def up(k: int = k) -> None:
            connected.add(k)
            if len(connected) == len(targets):
                all_up.set()

        c = AsyncConnectorClient(
            url=t["url"], token=t["token"], on_connect=up, initial_backoff_s=0.2, max_backoff_s=1.0
        )
        c.on_actions(on_actions)
        clients.append(c)
    tasks = [c.run_in_background() for c in clients]
    await asyncio.wait_for(all_up.wait(), 60)
    print(f"READY {len(connected)}", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)
    for c in clients:
        c.stop()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    result = json.dumps({"clients": len(clients), "samples": samples})
    Path(args.out).write_text(result)  # noqa: ASYNC240 - after the measurement


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import uvloop

    uvloop.run(run(args))


if __name__ == "__main__":
    main()
