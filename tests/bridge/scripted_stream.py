"""A scripted SSE endpoint for the bridge's reconnect/dedupe tests.

The real receiver cannot be told to drop a subscriber mid-stream, but that is exactly the case
the bridge's dedupe exists for (the stock SDK client reconnects with the same ``?replay=`` URL,
so the replay window arrives again). This endpoint speaks the receiver's wire format (data-only
JSON frames with ``id:`` lines on a replay stream, ``event: heartbeat`` frames, never comments)
and, per connection, sends every frame it holds, then either closes (forcing a reconnect) or
stays open.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse


class ScriptedStream:
    def __init__(self, product_id: str, token: str) -> None:
        self.product_id = product_id
        self.token = token
        self._lock = threading.Lock()
        self._frames: list[dict[str, Any]] = []
        self.connections: list[dict[str, str]] = []  # query params of each accepted connection
        # The first N connections are closed after the frames are sent; later ones stay open.
        self.close_first_n = 0
        self._closing = False
        self.app = self._build_app()

    def add_frame(self, frame: dict[str, Any]) -> None:
        with self._lock:
            self._frames.append(frame)

    def shutdown(self) -> None:
        """Lets open streams end so the server can stop without waiting for them."""
        self._closing = True

    @staticmethod
    def _encode(position: int, frame: dict[str, Any]) -> bytes:
        data = json.dumps(frame, separators=(",", ":"))
        return f"id: {position}\ndata: {data}\n\n".encode()

    def _build_app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/stream/{product_id}")
        async def stream(product_id: str, request: Request) -> StreamingResponse:
            if request.headers.get("authorization") != f"Bearer {self.token}":
                raise HTTPException(401, "bad token")
            if product_id != self.product_id:
                raise HTTPException(404, "unknown product")
            with self._lock:
                self.connections.append(dict(request.query_params))
                n = len(self.connections)
                frames = list(self._frames)
            close_after = n <= self.close_first_n

            async def body() -> AsyncIterator[bytes]:
                yield b"event: heartbeat\ndata:\n\n"
                sent = 0
                for frame in frames:
                    sent += 1
                    yield self._encode(sent, frame)
                if close_after:
                    return
                # Stay open and tail: frames added later are sent live.
                while not self._closing and not await request.is_disconnected():
                    with self._lock:
                        new = self._frames[sent:]
                    for frame in new:
                        sent += 1
                        yield self._encode(sent, frame)
                    await asyncio.sleep(0.02)

            return StreamingResponse(body(), media_type="text/event-stream; charset=utf-8")

        return app
