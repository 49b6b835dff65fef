"""A small OpenAI-compatible LLM server for tests, plus a helper that serves any ASGI app.

The fake answers ``POST /v1/chat/completions`` (and ``/chat/completions``) deterministically
from what it received, and records every request, so tests can assert both on what the bridge
sent (the prompt) and on what came back to the user (the reply):

* a chat turn (system + user message, as the bridge's ``/reply`` sends) is answered with
  ``ANSWER for <name> | activity: <activity lines> | q: <question>``;
* a summariser call (a single user message ending in ``Summary:``) is answered with
  ``SUMMARY of <n> actions; last: <last action>``.

Answers are one line on purpose: Rasa's socketio channel splits bot text on blank lines.

Use the ``fake_llm`` fixture (function scope: recordings and the failure switch are reset for
each test) or ``fake_llm_server`` (session scope, shared). Import both into a conftest.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

NO_NAME = "(unknown)"
NO_ACTIVITY = "(none)"
_NAME_RE = re.compile(r"User's first name: (.+?)\.\s*$")
_ACTION_RE = re.compile(r"^\s*\d+\.\s+(\[\d+\].*)$")


class UvicornThread:
    """Serve an ASGI app on ``127.0.0.1:<free port>`` from a background thread.

    The socket is bound before the server starts, so the port is known up front and no other
    process can take it in between. ``start()`` returns once uvicorn reports it is serving
    (the app's lifespan startup has finished); ``stop()`` runs the lifespan shutdown.
    """

    def __init__(self, app: Any, *, name: str = "asgi", log_level: str = "warning") -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level=log_level, lifespan="on", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name=name, daemon=True
        )

    def start(self, timeout: float = 20.0) -> UvicornThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"{self._thread.name}: server exited during startup")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"{self._thread.name}: not serving after {timeout} s")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 20.0) -> None:
        if self._thread.is_alive():
            self._server.should_exit = True
            self._thread.join(timeout)
            if self._thread.is_alive():
                # Open keep-alive/streaming connections can hold a graceful exit; force it.
                self._server.force_exit = True
                self._thread.join(timeout)
        with contextlib.suppress(OSError):
            self._sock.close()

    def __enter__(self) -> UvicornThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class RecordedRequest:
    path: str
    model: str
    messages: list[dict[str, Any]]
    answer: str | None  # None when the request was failed on purpose
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def system(self) -> str:
        return "\n".join(m["content"] for m in self.messages if m.get("role") == "system")

    @property
    def user(self) -> str:
        return "\n".join(m["content"] for m in self.messages if m.get("role") == "user")

    @property
    def is_chat(self) -> bool:
        """A /reply turn (system + user) rather than a summariser call."""
        return any(m.get("role") == "system" for m in self.messages)


def _section(text: str, header: str) -> str:
    """The body of ``[HEADER]`` in a ``build_user_prompt_block`` prompt ("" if absent)."""
    marker = f"[{header}]\n"
    start = text.find(marker)
    if start < 0:
        return ""
    body = text[start + len(marker) :]
    # Sections are separated by a blank line followed by the next "[HEADER]".
    nxt = re.search(r"\n\n\[[A-Z][A-Z ]+\]\n", body)
    return (body[: nxt.start()] if nxt else body).strip()


def activity_lines(prompt: str) -> list[str]:
    """Action lines ("[3] click: … — url") and "Summary: …" lines of the activity block."""
    block = _section(prompt, "RECENT PRODUCT ACTIVITY")
    lines: list[str] = []
    for raw in block.splitlines():
        if m := _ACTION_RE.match(raw):
            lines.append(m.group(1).strip())
        elif raw.startswith("Summary: "):
            lines.append(raw.strip())
    return lines


def answer_for(messages: list[dict[str, Any]]) -> str:
    """The deterministic answer to one chat-completions request."""
    system = "\n".join(m.get("content", "") for m in messages if m.get("role") == "system")
    user = "\n".join(m.get("content", "") for m in messages if m.get("role") == "user")
    if not system and user.rstrip().endswith("Summary:"):
        actions = [m.group(1) for line in user.splitlines() if (m := _ACTION_RE.match(line))]
        last = actions[-1] if actions else NO_ACTIVITY
        return f"SUMMARY of {len(actions)} actions; last: {last}"
    name = NO_NAME
    for line in system.splitlines():
        if m := _NAME_RE.match(line.strip()):
            name = m.group(1)
    activity = " ; ".join(activity_lines(user)) or NO_ACTIVITY
    question = _section(user, "CURRENT USER MESSAGE") or user.strip()
    return " ".join(f"ANSWER for {name} | activity: {activity} | q: {question}".split())


class FakeLLM:
    """The server's state: recordings and switches. Safe to read from the test thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self.fail = False
        self.fail_status = 500
        self.app = self._build_app()
        self._server: UvicornThread | None = None

    # --- test-facing API ----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """What to pass as the OpenAI ``base_url`` (BRIDGE_LLM_BASE_URL)."""
        assert self._server is not None, "FakeLLM is not running"
        return f"{self._server.url}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.is_chat]

    def chats_asking(self, question: str) -> list[RecordedRequest]:
        """Chat turns whose current user message is exactly ``question``."""
        return [
            r for r in self.chat_requests if _section(r.user, "CURRENT USER MESSAGE") == question
        ]

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
        self.fail = False
        self.fail_status = 500

    def start(self) -> FakeLLM:
        self._server = UvicornThread(self.app, name="fake-llm").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    # --- the HTTP side ------------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="fake OpenAI-compatible LLM")
        counter = iter(range(1, 1_000_000_000))

        async def completions(request: Request) -> JSONResponse:
            body = await request.json()
            messages = body.get("messages") or []
            model = str(body.get("model", ""))
            headers = {k.lower(): v for k, v in request.headers.items()}
            if self.fail:
                with self._lock:
                    self._requests.append(
                        RecordedRequest(request.url.path, model, messages, None, headers)
                    )
                return JSONResponse(
                    {
                        "error": {
                            "message": "fake LLM failure (switched on by the test)",
                            "type": "server_error",
                            "param": None,
                            "code": None,
                        }
                    },
                    status_code=self.fail_status,
                )
            text = answer_for(messages)
            with self._lock:
                self._requests.append(
                    RecordedRequest(request.url.path, model, messages, text, headers)
                )
            n = next(counter)
            return JSONResponse(
                {
                    "id": f"chatcmpl-fake-{n}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                            "logprobs": None,
                        }
                    ],
                    "usage": {
                        "prompt_tokens": sum(len(str(m.get("content", ""))) for m in messages),
                        "completion_tokens": len(text),
                        "total_tokens": 0,
                    },
                }
            )

        app.add_api_route("/v1/chat/completions", completions, methods=["POST"])
        app.add_api_route("/chat/completions", completions, methods=["POST"])
        return app


@pytest.fixture(scope="session")
def fake_llm_server() -> Iterator[FakeLLM]:
    llm = FakeLLM().start()
    try:
        yield llm
    finally:
        llm.stop()


@pytest.fixture
def fake_llm(fake_llm_server: FakeLLM) -> Iterator[FakeLLM]:
    fake_llm_server.reset()
    yield fake_llm_server
    fake_llm_server.reset()
