"""Bridge configuration, read once from the environment (or an env file).

Every setting has a ``BRIDGE_*`` name. The names the seed tutorial's ``bridge/.env`` uses
(``STREAM_URL``, ``UNKEY_API_KEY``, ``OPENAI_API_KEY``, ``LLM_MODEL`` …) are accepted too, so a
tutorial ``.env`` works unchanged; when both are set the ``BRIDGE_*`` name wins.

There is no module-level instance: ``cli`` builds a :class:`BridgeSettings` and hands it to
``app.create_app``, so tests can run several differently-configured bridges in one process.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_REPLY_TOKEN_CHARS = 16


def _env(*names: str) -> AliasChoices:
    # The first name wins when several are set.
    return AliasChoices(*names)


class BridgeSettings(BaseSettings):
    # env_file stays None here: only the CLI opts into reading a file, so tests never pick up a
    # developer's .env by accident. populate_by_name lets code pass field names directly.
    model_config = SettingsConfigDict(
        env_file=None, extra="ignore", populate_by_name=True, case_sensitive=False,
        hide_input_in_errors=True,  # a rejected token is never echoed
    )

    # --- where activity comes from -------------------------------------------------------------
    # stream: hold the SDK stream open and keep context in memory (the tutorial, autoplay-sdk
    # 0.7.2). pull: read the user's live activity over REST on every reply (0.13.0's recipe).
    mode: Literal["stream", "pull"] = Field(
        default="stream", validation_alias=_env("BRIDGE_MODE"),
        description="stream (the tutorial: SSE + in-memory context) or pull (live activity over "
        "REST at each reply; no stream, no store).",
    )

    # --- the event stream (our receiver, or the hosted connector) ------------------------------
    stream_url: str | None = Field(
        default=None, validation_alias=_env("BRIDGE_STREAM_URL", "STREAM_URL"),
        description="The product's `stream_url` (`http(s)://…/stream/<product_id>`). Required in "
        "stream mode.",
    )
    stream_token: SecretStr = Field(
        default=SecretStr(""),
        validation_alias=_env("BRIDGE_STREAM_TOKEN", "UNKEY_API_KEY"),
        description="The product's stream key (the tutorial's `UNKEY_API_KEY`).",
    )
    # Ask the receiver for the last LOOKBACK_SECONDS of events on every (re)connect, so a
    # restarted bridge answers with context at once. Turn off for servers that reject the query.
    replay: bool = Field(
        default=True, validation_alias=_env("BRIDGE_REPLAY"),
        description="On every (re)connect, ask for the last `BRIDGE_LOOKBACK_SECONDS` of events "
        "(`?replay=`), so a restarted bridge answers with context at once.",
    )

    # --- pull mode: live activity over REST ----------------------------------------------------
    activity_url: str | None = Field(
        default=None,
        validation_alias=_env("BRIDGE_ACTIVITY_URL", "CONNECTOR_URL", "MCP_URL"),
        description="pull mode: the receiver's base URL (the origin of mcp_url; a trailing /mcp is "
        "dropped).",
    )
    product_id: str | None = Field(
        default=None, validation_alias=_env("BRIDGE_PRODUCT_ID", "PRODUCT_ID"),
        description="pull mode: the product whose users' activity is read.",
    )
    mcp_key: SecretStr = Field(
        default=SecretStr(""), validation_alias=_env("BRIDGE_MCP_KEY", "MCP_KEY"),
        description="pull mode: the product's MCP key (Authorization: Bearer).",
    )
    activity_timeout_s: float = Field(
        default=5.0, gt=0, validation_alias=_env("BRIDGE_ACTIVITY_TIMEOUT_S"),
        description="pull mode: longest wait for one live-activity read; then the reply goes on "
        "without context.",
    )

    # --- the LLM (any OpenAI-compatible endpoint) ---------------------------------------------
    llm_api_key: SecretStr = Field(
        default=SecretStr(""),
        validation_alias=_env("BRIDGE_LLM_API_KEY", "OPENAI_API_KEY"),
        description="API key of the LLM endpoint (empty for servers without keys).",
    )
    llm_base_url: str | None = Field(
        default=None,
        validation_alias=_env("BRIDGE_LLM_BASE_URL", "OPENAI_BASE_URL"),
        description="Base URL of any OpenAI-compatible endpoint (Ollama, vLLM, llama.cpp…); "
        "unset: OpenAI.",
    )
    llm_model: str = Field(
        default="gpt-4o-mini", validation_alias=_env("BRIDGE_LLM_MODEL", "LLM_MODEL"),
        description="Model name sent to the endpoint.",
    )
    # Kept below the Rasa action's 12 s bridge timeout so the bridge, not the action, decides
    # what the user reads when the model is slow.
    llm_timeout_s: float = Field(
        default=10.0, gt=0, validation_alias=_env("BRIDGE_LLM_TIMEOUT_S"),
        description="Seconds one LLM call may take; keep it below the action server's "
        "`BRIDGE_TIMEOUT_S` (12 s).",
    )
    llm_max_retries: int = Field(
        default=1, ge=0, le=10, validation_alias=_env("BRIDGE_LLM_MAX_RETRIES"),
        description="Retries of a failed LLM call.",
    )

    # --- context pipeline (tutorial defaults) --------------------------------------------------
    summary_threshold: int = Field(
        default=10, ge=1, validation_alias=_env("BRIDGE_SUMMARY_THRESHOLD", "SUMMARY_THRESHOLD"),
        description="Actions in a session before the summarizer condenses them (tutorial default).",
    )
    lookback_seconds: int = Field(
        default=300, ge=1, validation_alias=_env("BRIDGE_LOOKBACK_SECONDS", "LOOKBACK_SECONDS"),
        description="How far back a reply looks at the user's activity, in seconds.",
    )
    max_actions: int = Field(
        default=30, ge=1, validation_alias=_env("BRIDGE_MAX_ACTIONS", "MAX_ACTIONS"),
        description="Most recent actions put into one prompt.",
    )
    # How many of a user's most recent sessions feed one reply (the tutorial uses 3).
    sessions_per_user: int = Field(
        default=3, ge=1, le=50, validation_alias=_env("BRIDGE_SESSIONS_PER_USER"),
        description="How many of a user's most recent sessions feed one reply.",
    )

    # --- memory bounds (a long-running bridge must not grow without limit) ----------------------
    max_sessions: int = Field(
        default=10_000, ge=1, validation_alias=_env("BRIDGE_MAX_SESSIONS"),
        description="Sessions kept in memory; the least recently active are evicted beyond it.",
    )
    max_users: int = Field(
        default=10_000, ge=1, validation_alias=_env("BRIDGE_MAX_USERS"),
        description="Users kept in memory; the least recently active are evicted beyond it.",
    )
    dedupe_max_entries: int = Field(
        default=100_000, ge=1, validation_alias=_env("BRIDGE_DEDUPE_MAX_ENTRIES"),
        description="Remembered event ids, so replayed events are not counted twice.",
    )

    # --- who may ask for replies ----------------------------------------------------------------
    # /reply answers with a user's activity-grounded text and spends LLM money: it needs
    # "Authorization: Bearer <this>", which the Rasa action sends (BRIDGE_REPLY_TOKEN in its
    # environment too). Unset: /reply refuses everyone and `bridge serve` does not start.
    reply_token: SecretStr | None = Field(
        default=None,
        validation_alias=_env("BRIDGE_REPLY_TOKEN"),
        description="Bearer token /reply requires; the Rasa action server sends it (>= 16 chars).",
    )

    # --- HTTP server (used by `bridge serve`) --------------------------------------------------
    host: str = Field(
        default="127.0.0.1", validation_alias=_env("BRIDGE_HOST"),
        description="Address `bridge serve` listens on.",
    )
    port: int = Field(
        default=8090, ge=0, le=65535, validation_alias=_env("BRIDGE_PORT"),
        description="Port `bridge serve` listens on.",
    )
    log_level: str = Field(
        default="INFO", validation_alias=_env("BRIDGE_LOG_LEVEL"),
        description="Log level (DEBUG, INFO, WARNING, ...).",
    )

    @field_validator("stream_url")
    @classmethod
    def _stream_url_is_http(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not value.startswith(("http://", "https://")):
            raise ValueError("STREAM_URL must be an http(s) URL ending in /stream/<product_id>")
        return value

    @field_validator("reply_token", mode="after")
    @classmethod
    def _reply_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        if len(value.get_secret_value()) < MIN_REPLY_TOKEN_CHARS:
            raise ValueError(
                f"BRIDGE_REPLY_TOKEN must be at least {MIN_REPLY_TOKEN_CHARS} characters "
                "(e.g. `openssl rand -base64 32`)"
            )
        return value
    @field_validator("activity_url")
    @classmethod
    def _activity_origin(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("BRIDGE_ACTIVITY_URL must be the receiver's http(s) base URL")
        return value.removesuffix("/mcp")

    @model_validator(mode="after")
    def _mode_has_what_it_needs(self) -> Self:
        if self.mode == "stream" and self.stream_url is None:
            raise ValueError("STREAM_URL (BRIDGE_STREAM_URL) is required in stream mode")
        if self.mode == "pull":
            missing = [
                name for name, value in (
                    ("BRIDGE_ACTIVITY_URL", self.activity_url),
                    ("BRIDGE_PRODUCT_ID", self.product_id),
                    ("BRIDGE_MCP_KEY", self.mcp_key.get_secret_value()),
                ) if not value
            ]
            if missing:
                raise ValueError(f"pull mode needs {', '.join(missing)}")
        return self

    @field_validator("llm_base_url")
    @classmethod
    def _empty_base_url_is_default(cls, value: str | None) -> str | None:
        # An empty OPENAI_BASE_URL= line in an env file means "use OpenAI", not "".
        if value is None or not value.strip():
            return None
        return value.strip()
