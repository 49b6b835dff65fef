"""Bridge configuration, read once from the environment (or an env file).

Every setting has a ``BRIDGE_*`` name. The names the seed tutorial's ``bridge/.env`` uses
(``STREAM_URL``, ``UNKEY_API_KEY``, ``OPENAI_API_KEY``, ``LLM_MODEL`` …) are accepted too, so a
tutorial ``.env`` works unchanged; when both are set the ``BRIDGE_*`` name wins.

There is no module-level instance: ``cli`` builds a :class:`BridgeSettings` and hands it to
``app.create_app``, so tests can run several differently-configured bridges in one process.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _env(*names: str) -> AliasChoices:
    # The first name wins when several are set.
    return AliasChoices(*names)


class BridgeSettings(BaseSettings):
    # env_file stays None here: only the CLI opts into reading a file, so tests never pick up a
    # developer's .env by accident. populate_by_name lets code pass field names directly.
    model_config = SettingsConfigDict(
        env_file=None, extra="ignore", populate_by_name=True, case_sensitive=False
    )

    # --- the event stream (our receiver, or the hosted connector) ------------------------------
    stream_url: str = Field(
        validation_alias=_env("BRIDGE_STREAM_URL", "STREAM_URL"),
        description="The product's `stream_url` (`http(s)://…/stream/<product_id>`). Required.",
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
    def _stream_url_is_http(cls, value: str) -> str:
        value = value.strip()
        if not value.startswith(("http://", "https://")):
            raise ValueError("STREAM_URL must be an http(s) URL ending in /stream/<product_id>")
        return value

    @field_validator("llm_base_url")
    @classmethod
    def _empty_base_url_is_default(cls, value: str | None) -> str | None:
        # An empty OPENAI_BASE_URL= line in an env file means "use OpenAI", not "".
        if value is None or not value.strip():
            return None
        return value.strip()
