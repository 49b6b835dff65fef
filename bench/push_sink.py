"""A push destination for the benchmark: answers 200 at once and records, per payload, when it
arrived and the event's ``timestamp_start`` (the load generator's scheduled send time, so
arrival minus it is POST-to-push latency, same machine, same wall clock).

Served like the receiver and the no-op ceiling (uvicorn, uvloop, httptools, no access log).
``GET /stats`` returns the count, the first and last arrival and the samples.

    python -m bench.push_sink --port 9100
"""

from __future__ import annotations

import argparse
import time

import orjson
from fastapi import FastAPI, Request
from starlette.responses import Response

app = FastAPI(redirect_slashes=False)
OK = b'{"status":"ok"}'
samples: list[tuple[float, float, int, str]] = []  # (arrival, timestamp_start, position, session)


@app.post("/push")
async def push(request: Request) -> Response:
    now = time.time()
    payload = orjson.loads(await request.body())
    samples.append((now, payload["actions"][0]["timestamp_start"], payload["position"],
                    payload["session_id"] or ""))
    return Response(OK, media_type="application/json")


@app.get("/stats")
async def stats() -> Response:
    return Response(orjson.dumps({"count": len(samples), "samples": samples}),
                    media_type="application/json")


@app.post("/reset")
async def reset() -> Response:
    samples.clear()
    return Response(OK, media_type="application/json")


@app.get("/readyz")
async def readyz() -> Response:
    return Response(OK, media_type="application/json")


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.Server(uvicorn.Config(
        app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False,
        loop="uvloop", http="httptools", lifespan="off",
    )).run()


if __name__ == "__main__":
    main()
