"""A minimal, strict SSE reader for tests (the stock SDK hides ids and heartbeats)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Frame:
    event: str | None = None
    data: str = ""
    id: str | None = None

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.data)


async def frames(response: httpx.Response) -> AsyncIterator[Frame]:
    """Parse frames exactly as sent (one ``data:`` line per frame in our protocol)."""
    current = Frame()
    seen_field = False
    async for line in response.aiter_lines():
        if line == "":
            if seen_field:
                yield current
            current, seen_field = Frame(), False
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        seen_field = True
        if name == "data":
            current.data = value if not current.data else current.data + "\n" + value
        elif name == "event":
            current.event = value
        elif name == "id":
            current.id = value


@dataclass
class Collector:
    """Reads a stream in the background and collects payload frames."""

    url: str
    token: str
    headers: dict[str, str] = field(default_factory=dict)
    payloads: list[Frame] = field(default_factory=list)
    heartbeats: int = 0
    status: int | None = None
    response_headers: httpx.Headers | None = None
    _task: asyncio.Task[None] | None = None
    _connected: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def __aenter__(self) -> Collector:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._connected.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}", **self.headers}
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(None, connect=5)) as client,
            client.stream("GET", self.url, headers=headers) as response,
        ):
            self.status = response.status_code
            self.response_headers = response.headers
            async for frame in frames(response):
                if frame.event == "heartbeat":
                    self.heartbeats += 1
                    self._connected.set()
                else:
                    self.payloads.append(frame)
                self._changed.set()
        self._connected.set()

    async def wait_for(self, count: int, timeout: float = 10) -> list[Frame]:
        async def until() -> None:
            while len(self.payloads) < count:
                self._changed.clear()
                if self._task is not None and self._task.done():
                    raise AssertionError(f"stream ended after {len(self.payloads)} frames")
                await self._changed.wait()

        await asyncio.wait_for(until(), timeout)
        return self.payloads

    async def wait_heartbeats(self, count: int, timeout: float = 10) -> None:
        async def until() -> None:
            while self.heartbeats < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), timeout)
