"""A scripted rasa-webchat conversation over Socket.IO, as the widget does it.

Runs under any interpreter that has python-socketio's asyncio client (and aiohttp): the
project's 3.11 venv when those are installed there (websocket transport, like the widget), or
the Rasa venv (python-socketio 5.8.0; polling transport, because engineio 4.15.1's websocket
client breaks with the aiohttp 3.9.5 Rasa pins).

    stdin:  {"url", "transports", "session_id", "custom_data", "messages", "timeout"}
    stdout: {"session_id": str, "replies": [[bot texts for message 1], ...]}

The sequence is the widget's: connect → ``session_request {session_id}`` → ``session_confirm``
→ per message ``user_uttered {message, customData, session_id}`` → ``bot_uttered`` events.
Standard library + python-socketio only; must stay importable on Python 3.10.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import socketio


async def chat(spec: dict[str, Any]) -> dict[str, Any]:
    timeout = float(spec.get("timeout", 60))
    sio = socketio.AsyncClient(reconnection=False)
    confirmed: asyncio.Queue[str] = asyncio.Queue()
    uttered: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    @sio.on("session_confirm")
    async def _confirm(data: Any) -> None:
        # Rasa sends the bare id; some versions wrap it as {"session_id": ...}.
        await confirmed.put(data["session_id"] if isinstance(data, dict) else str(data))

    @sio.on("bot_uttered")
    async def _uttered(data: Any) -> None:
        await uttered.put(data)

    await sio.connect(
        spec["url"], transports=spec.get("transports"), socketio_path="/socket.io", wait_timeout=10
    )
    try:
        await sio.emit("session_request", {"session_id": spec.get("session_id")})
        session_id = await asyncio.wait_for(confirmed.get(), timeout)
        replies: list[list[str]] = []
        for message in spec["messages"]:
            await sio.emit(
                "user_uttered",
                {"message": message, "customData": spec["custom_data"], "session_id": session_id},
            )
            # Our bot answers each turn with one single-paragraph message (one bot_uttered).
            first = await asyncio.wait_for(uttered.get(), timeout)
            replies.append([first.get("text", "")])
    finally:
        await sio.disconnect()
    return {"session_id": session_id, "replies": replies}


if __name__ == "__main__":
    result = asyncio.run(chat(json.load(sys.stdin)))
    json.dump(result, sys.stdout)
