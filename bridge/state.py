"""Per-bridge context state: the SDK pipeline plus the indexes the reply path needs.

One :class:`BridgeState` is created per app by ``create_app``; nothing lives at module level, so
two bridges in one process (tests) never share context.

Pipeline (autoplay-sdk 0.7.2, as in the seed tutorial)::

    AsyncConnectorClient --on_actions--> BridgeState.on_actions
      |-> AsyncContextStore.add               raw actions, read by /reply
      `-> AsyncAgentContextWriter.add
            `-> AsyncSessionSummarizer        LLM summary every SUMMARY_THRESHOLD actions
                  `-> overwrite_with_summary
                        |-> AsyncContextStore.on_summary
                        `-> SessionState.tick()
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from autoplay_sdk import ActionsPayload, AsyncContextStore, AsyncSessionSummarizer
from autoplay_sdk.agent_context import AsyncAgentContextWriter
from autoplay_sdk.agent_state_v2 import SessionState

from bridge.settings import BridgeSettings

log = logging.getLogger("bridge.state")

# (product_id, session_id, forwarded_at, index of the first action)
DedupeKey = tuple[str, str, float, int]


class SeenSet:
    """A bounded set of recently seen keys (insertion-ordered, oldest evicted first).

    The receiver replays the last LOOKBACK_SECONDS on every (re)connect, so the same frames
    arrive again after a reconnect. Entries older than the replay window can never come back,
    so a size cap a little above the expected window volume is enough.
    """

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._keys: OrderedDict[DedupeKey, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: DedupeKey) -> bool:
        """Record ``key``; return False when it was already present."""
        if key in self._keys:
            self._keys.move_to_end(key)
            return False
        self._keys[key] = None
        while len(self._keys) > self._max:
            self._keys.popitem(last=False)
        return True


def dedupe_key(payload: ActionsPayload) -> DedupeKey | None:
    """Identity of one stream frame, or None when the frame carries no usable identity.

    Our receiver makes ``forwarded_at`` deterministic per event (its receive time, unique per
    session), so a replayed frame has the same key as the original. The first action's
    ``index`` is part of the key so two distinct events that happen to share a float timestamp
    are still told apart.
    """
    if not payload.forwarded_at or not payload.session_id:
        return None
    first_index = payload.actions[0].index if payload.actions else -1
    return (payload.product_id or "", payload.session_id, float(payload.forwarded_at), first_index)


@dataclass
class UserSessions:
    """A user's recent sessions (session_id → last activity, epoch seconds) and email."""

    sessions: dict[str, float]
    email: str | None = None


class BridgeState:
    """Everything a running bridge knows. Created by ``create_app``; used by the routes."""

    def __init__(
        self,
        settings: BridgeSettings,
        summarise: Callable[[str], Awaitable[str]],
    ) -> None:
        self.settings = settings
        self.summarizer = AsyncSessionSummarizer(
            llm=summarise,
            threshold=settings.summary_threshold,
            # Bounded per-session queue: a slow LLM must not let memory grow without limit.
            max_queue_size=1000,
        )
        # The store is built WITHOUT the summarizer on purpose: both the store and the writer
        # claim ``summarizer.on_summary`` and the last one wins (the tutorial's order silently
        # disconnects the store and logs a warning). Here the writer owns the hook and forwards
        # each summary to the store itself, so /reply sees summaries too.
        self.context_store = AsyncContextStore(
            lookback_seconds=settings.lookback_seconds,
            max_actions=settings.max_actions,
            max_sessions=settings.max_sessions,
        )
        self.agent_writer = AsyncAgentContextWriter(
            summarizer=self.summarizer,
            overwrite_with_summary=self._overwrite_with_summary,
            write_actions=self._write_actions,
            debounce_ms=0,
        )
        self._users: OrderedDict[str, UserSessions] = OrderedDict()
        self._session_product: OrderedDict[str, str] = OrderedDict()
        self._session_states: OrderedDict[str, SessionState] = OrderedDict()
        self._seen = SeenSet(settings.dedupe_max_entries)
        self.events_received = 0
        self.duplicates_dropped = 0
        self.summaries_received = 0
        self.stream_connected = False
        self.connects = 0

    # ------------------------------------------------------------------ ingest (SSE callback)

    async def on_actions(self, payload: ActionsPayload) -> None:
        key = dedupe_key(payload)
        if key is not None and not self._seen.add(key):
            # A replayed frame after a reconnect: already in the store and the summarizer.
            self.duplicates_dropped += 1
            log.debug("duplicate frame dropped session=%s key=%s", payload.session_id, key)
            return
        self.events_received += 1
        self._index_session(payload)
        if payload.session_id and payload.product_id:
            self._session_product[payload.session_id] = payload.product_id
            self._session_product.move_to_end(payload.session_id)
            self._trim(self._session_product, self.settings.max_sessions)
        if payload.session_id:
            self._session_state(payload.session_id).tick()
        await self.context_store.add(payload)
        await self.agent_writer.add(payload)

    def on_connect(self) -> None:
        self.stream_connected = True
        self.connects += 1
        log.info("stream connected (connect #%d)", self.connects)

    def on_disconnect(self) -> None:
        self.stream_connected = False
        log.warning("stream disconnected; the SDK client reconnects with backoff")

    def _index_session(self, payload: ActionsPayload) -> None:
        user_id, session_id = payload.user_id, payload.session_id
        if not user_id or not session_id:
            return
        now = time.time()
        # Replayed events keep their original time, so a restarted bridge orders sessions by
        # when the user acted, not by when the bridge happened to hear about it.
        seen_at = float(payload.forwarded_at or now)
        entry = self._users.get(user_id)
        if entry is None:
            entry = self._users[user_id] = UserSessions(sessions={})
        self._users.move_to_end(user_id)
        cutoff = now - self.settings.lookback_seconds
        entry.sessions = {s: t for s, t in entry.sessions.items() if t >= cutoff}
        entry.sessions[session_id] = max(seen_at, entry.sessions.get(session_id, 0.0))
        if payload.email:
            entry.email = payload.email
        self._trim(self._users, self.settings.max_users)

    def _session_state(self, session_id: str) -> SessionState:
        state = self._session_states.get(session_id)
        if state is None:
            state = self._session_states[session_id] = SessionState(
                interaction_timeout_s=60.0, cooldown_period_s=120.0
            )
            self._trim(self._session_states, self.settings.max_sessions)
        else:
            self._session_states.move_to_end(session_id)
        return state

    @staticmethod
    def _trim(mapping: OrderedDict, limit: int) -> None:  # type: ignore[type-arg]
        while len(mapping) > limit:
            mapping.popitem(last=False)

    # ------------------------------------------------------------------ writer callbacks

    async def _write_actions(self, session_id: str, text: str) -> None:
        log.debug("actions written session=%s len=%d", session_id, len(text))

    async def _overwrite_with_summary(self, session_id: str, summary: str) -> None:
        # Summary first (the writer's ordering guarantee); the store keeps the raw actions
        # that arrived after the summarizer's snapshot.
        self.summaries_received += 1
        await self.context_store.on_summary(session_id, summary)
        log.info("summary ready session=%s len=%d", session_id, len(summary))
        self._session_state(session_id).tick()

    # ------------------------------------------------------------------ read side (/reply)

    def email_for(self, user_id: str) -> str | None:
        entry = self._users.get(user_id)
        return entry.email if entry else None

    def recent_activity(self, user_id: str) -> str:
        """The user's context text from their most recent sessions, newest first."""
        entry = self._users.get(user_id)
        if entry is None:
            return ""
        newest = sorted(entry.sessions.items(), key=lambda item: -item[1])
        chunks: list[str] = []
        for session_id, _ts in newest[: self.settings.sessions_per_user]:
            # Reads must pass product_id: the store buckets by (product_id, session_id) and a
            # read without it silently returns "" (tutorial troubleshooting, cause 4).
            product_id = self._session_product.get(session_id)
            text = self.context_store.get(session_id, product_id=product_id)
            if text:
                chunks.append(text)
        return "\n\n".join(chunks).strip()

    def stats(self) -> dict[str, int | bool]:
        return {
            "users_tracked": len(self._users),
            "sessions_tracked": sum(len(u.sessions) for u in self._users.values()),
            "events_received": self.events_received,
            "duplicates_dropped": self.duplicates_dropped,
            "summaries_received": self.summaries_received,
            "stream_connected": self.stream_connected,
            "stream_connects": self.connects,
        }
