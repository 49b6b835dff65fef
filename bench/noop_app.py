"""The ingest ceiling: the same framework and server settings as the receiver, no work.

``POST /webhook/{product_id}`` reads the body, parses it as JSON (orjson, as the receiver
does), and answers 200 with a small JSON body. Served by ``python -m bench.noop_app`` with the
uvicorn settings of ``receiver serve`` (uvloop, httptools, no access log, same workers), and
the same garbage-collection policy (``receiver.ops.heap``), so the ratio measures our work only.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import orjson
from fastapi import FastAPI, Header, Request
from starlette.responses import Response

from receiver.ops import heap


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    policy = heap.start(600.0)
    try:
        yield
    finally:
        await heap.stop(policy)


app = FastAPI(redirect_slashes=False, lifespan=lifespan)
OK = orjson.dumps({"status": "ok", "duplicate": False})


@app.post("/webhook/{product_id}")
async def webhook(
    product_id: str, request: Request, x_posthog_secret: Annotated[str | None, Header()] = None
) -> Response:
    orjson.loads(await request.body())
    return Response(OK, media_type="application/json")


@app.get("/readyz")
async def readyz() -> Response:
    return Response(OK, media_type="application/json")


def main() -> None:
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    # Mirrors receiver.cli.serve: same loop, parser, logging and shutdown settings.
    common = dict(
        host="127.0.0.1", port=args.port, log_level="warning", proxy_headers=False,
        timeout_graceful_shutdown=10, access_log=False, loop="uvloop", http="httptools",
        lifespan="on",
    )
    if args.workers == 1:
        uvicorn.Server(uvicorn.Config(app, **common)).run()
    else:
        config = uvicorn.Config("bench.noop_app:app", workers=args.workers, **common)
        sock = config.bind_socket()
        Multiprocess(config, sockets=[sock]).run()


if __name__ == "__main__":
    main()
