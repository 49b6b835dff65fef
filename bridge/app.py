"""FastAPI app for the bridge: ``/reply`` and ``/healthz``, with activity from one of two modes.

* ``stream`` (default, the tutorial's): the SDK stream consumer feeds an in-memory context store
  (:class:`~bridge.state.BridgeState`); ``/reply`` reads it.
* ``pull`` (autoplay-sdk 0.13.0's Rasa recipe): no stream and no store; ``/reply`` reads the
  user's live activity over REST (:mod:`bridge.pull`) at the moment it answers.

``/reply`` requires ``Authorization: Bearer $BRIDGE_REPLY_TOKEN`` (the Rasa action sends it):
it answers with a user's activity-grounded text and spends LLM money, so it is for the action
server only, and the bridge belongs on a private network (docker compose publishes no port).

``create_app(settings)`` builds fresh state for every app, so several bridges can run in one
process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from autoplay_sdk import AsyncConnectorClient
from autoplay_sdk.rag_query.assembly import ChatContextAssembly, build_user_prompt_block
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request

from bridge.llm import LLM, LLMError
from bridge.prompts import name_from_email, system_prompt_for
from bridge.pull import ActivityReader, activity_text, email_of
from bridge.settings import BridgeSettings
from bridge.state import BridgeState

log = logging.getLogger("bridge")

# What the user reads when the model fails. Rasa shows it verbatim, so it must make sense on
# its own; the cause goes to the bridge log, never to the chat.
LLM_FAILURE_REPLY = (
    "Sorry, I can't reach the language model right now, so I can't answer that. "
    "Please try again in a minute."
)


def stream_url_with_replay(url: str, seconds: int) -> str:
    """``STREAM_URL`` plus ``?replay=<seconds>`` (kept as-is if the URL already asks for one).

    The stock client reconnects with the very same URL, so every reconnect replays the window;
    ``BridgeState`` drops the repeats.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if not any(k == "replay" for k, _ in query):
        query.append(("replay", str(seconds)))
    return urlunsplit(parts._replace(query=urlencode(query)))


class Bridge:
    """What the routes need: state, LLM and the stream task. Stored on ``app.state.bridge``."""

    def __init__(self, settings: BridgeSettings) -> None:
        self.settings = settings
        self.llm = LLM(settings)
        self.state = BridgeState(settings, summarise=self.llm.summarise)
        self.reader = ActivityReader(settings) if settings.mode == "pull" else None
        self.stream_url = (
            stream_url_with_replay(settings.stream_url or "", settings.lookback_seconds)
            if settings.replay
            else settings.stream_url or ""
        )
        self._client: AsyncConnectorClient | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.reader is not None:
            log.info(
                "pull mode: live activity of product %s from %s",
                self.settings.product_id, self.settings.activity_url,
            )
            return
        self._client = AsyncConnectorClient(
            url=self.stream_url,
            token=self.settings.stream_token.get_secret_value(),
            on_connect=self.state.on_connect,
            on_disconnect=self.state.on_disconnect,
        )
        self._client.on_actions(self.state.on_actions)
        self._task = self._client.run_in_background()
        # Never log the token; the URL carries only the product id.
        log.info("autoplay stream listening on %s", self.stream_url)

    async def stop(self) -> None:
        if self._client is not None:
            self._client.stop()
        if self._task is not None:
            # stop() only takes effect at the next frame, which may be a heartbeat 15-30 s away;
            # cancelling ends the read at once (the SDK treats CancelledError as "stop").
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._stop_summarizer_workers()
        if self.reader is not None:
            await self.reader.aclose()
        await self.llm.aclose()

    async def _stop_summarizer_workers(self) -> None:
        # AsyncSessionSummarizer keeps one idle worker task per session for 5 minutes and has no
        # public close(); cancel them so shutdown leaves no pending tasks behind.
        workers: dict[str, asyncio.Task[Any]] = getattr(self.state.summarizer, "_workers", {})
        tasks = list(workers.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def context(self, user_id: str) -> tuple[str, str | None]:
        """The user's activity text and email, from the stream's store or pulled right now."""
        if self.reader is None:
            return self.state.recent_activity(user_id), self.state.email_for(user_id)
        actions = await self.reader.actions(user_id)
        return activity_text(actions), email_of(actions)

    def health(self) -> dict[str, Any]:
        if self.reader is not None:
            return self.reader.stats()
        return {"mode": "stream", **self.state.stats()}

    async def reply(self, user_id: str, query: str) -> dict[str, Any]:
        activity, email = await self.context(user_id)
        assembly = ChatContextAssembly(
            recent_activity=activity,
            kb_records_text="",
            conversation_history_text="",
            user_message=query,
        )
        user_prompt = build_user_prompt_block(assembly)
        name = name_from_email(email)
        has_activity = bool(assembly.recent_activity.strip())
        try:
            text = await self.llm.complete(
                [
                    {"role": "system", "content": system_prompt_for(name)},
                    {"role": "user", "content": user_prompt},
                ],
                temperature=0.4,
                max_tokens=250,
            )
        except LLMError as exc:
            # A clear reply and a log entry, never a 500: Rasa would show its generic fallback
            # and the cause would be lost.
            log.error(
                "LLM call failed for user=%s model=%s: %s",
                user_id,
                self.llm.model,
                exc,
                exc_info=exc.__cause__,
            )
            return {
                "reply": LLM_FAILURE_REPLY,
                "name": name,
                "has_activity": has_activity,
                "error": str(exc),
            }
        return {"reply": text, "name": name, "has_activity": has_activity}


def reply_allowed(settings: BridgeSettings, authorization: str | None) -> bool:
    """The caller presents BRIDGE_REPLY_TOKEN; compared as SHA-256 digests in constant time.
    With no token configured nobody is allowed (fail closed)."""
    token = settings.reply_token
    scheme, _, presented = (authorization or "").partition(" ")
    presented = presented.strip() if scheme.lower() == "bearer" else ""
    expected = token.get_secret_value() if token is not None else ""
    same = hmac.compare_digest(
        hashlib.sha256(presented.encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )
    return same and token is not None and bool(presented)


def _bridge(request: Request) -> Bridge:
    bridge: Bridge = request.app.state.bridge
    return bridge


BridgeDep = Annotated[Bridge, Depends(_bridge)]


def create_app(settings: BridgeSettings) -> FastAPI:
    bridge = Bridge(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await bridge.start()
        try:
            yield
        finally:
            await bridge.stop()

    app = FastAPI(title="Autoplay × Rasa bridge", lifespan=lifespan)
    app.state.bridge = bridge

    @app.get("/healthz")
    async def healthz(bridge: BridgeDep) -> dict[str, Any]:
        return {"status": "ok", **bridge.health()}

    # ":path" so ids containing "/" (percent-encoded by the action) still route here.
    @app.get("/reply/{user_id:path}")
    async def reply(
        user_id: str,
        bridge: BridgeDep,
        query: Annotated[str, Query(max_length=4000)] = "",
        authorization: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        if not reply_allowed(bridge.settings, authorization):
            raise HTTPException(
                status_code=401,
                detail="missing or invalid 'Authorization: Bearer <BRIDGE_REPLY_TOKEN>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not query.strip():
            raise HTTPException(status_code=400, detail="query required")
        return await bridge.reply(user_id, query)

    return app
