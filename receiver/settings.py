"""Receiver configuration, read once from ``RECEIVER_*`` environment variables.

There is no module-level instance: ``cli`` builds a :class:`Settings` and hands it to
``app.create_app``, so tests can build as many differently-configured apps as they like.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024
MIN_ADMIN_TOKEN_CHARS = 24


class Settings(BaseSettings):
    # hide_input_in_errors: a rejected value (a short admin token) is never echoed in the error.
    model_config = SettingsConfigDict(
        env_prefix="RECEIVER_", env_file=None, extra="ignore", hide_input_in_errors=True
    )

    # Where to listen, and the base URL printed for webhook/stream URLs.
    host: str = Field(
        default="127.0.0.1", description="Address to listen on (`0.0.0.0` in containers)."
    )
    port: int = Field(default=8000, ge=0, le=65535, description="Port to listen on.")
    public_url: str | None = Field(
        default=None,
        description="Base URL printed in `webhook_url`, `stream_url` and `capture_url`: what PostHog "
        "and your users' browsers reach. Unset: `http://HOST:PORT`.",
    )
    workers: int = Field(
        default=1, ge=1, le=64,
        description="Processes for `receiver serve`; they share the socket and the database.",
    )

    # Database. Unset => an embedded Postgres under ``data_dir`` is started by ``receiver serve``.
    database_url: SecretStr | None = Field(
        default=None,
        description="Postgres URL (`postgresql://user:pass@host/db`). Unset: an embedded Postgres "
        "under `RECEIVER_DATA_DIR`, started and stopped by the `receiver` commands.",
    )
    data_dir: Path = Field(
        default=Path(".data"),
        description="Where the embedded Postgres keeps its data (`DATA_DIR/pg`).",
    )
    embedded_pg_port: int = Field(
        default=54329, ge=1, le=65535, description="Loopback port of the embedded Postgres."
    )
    db_pool_size: int = Field(
        default=10, ge=1, le=200, description="Database connections per process."
    )
    db_timeout_seconds: float = Field(
        default=5.0, gt=0,
        description="Longest wait to connect or to get a pooled connection; past it the request "
        "answers 503.",
    )

    # Admin API (POST /products): loopback callers, or this bearer token.
    admin_token: SecretStr | None = Field(
        default=None,
        description="Bearer token for `POST /products` and `/admin` from anywhere (loopback callers "
        "need none while `RECEIVER_ADMIN_ALLOW_LOOPBACK` is true).",
    )
    admin_allow_loopback: bool = Field(
        default=True,
        description="Also allow loopback callers without a token (never proxied ones).",
    )

    # Ingest.
    max_body_bytes: int = Field(
        default=MIB // 2, ge=1024,
        description="Largest request body on the wire, in bytes (413 above).",
    )
    max_decompressed_bytes: int = Field(
        default=MIB // 2, ge=1024,
        description="Largest capture payload after gzip/base64 decoding, in bytes (413 above). "
        "A real posthog-js event is 1-4.5 KB; its largest flush ~150 events.",
    )
    batch_max_events: int = Field(
        default=1000, ge=1, description="Most events committed in one group-commit transaction."
    )
    secret_grace_seconds: int = Field(
        default=24 * 3600, ge=0,
        description="How long a rotated webhook secret or stream key keeps working.",
    )

    # Budgets per request (receiver.ingest.budget); over a cap: 413, or 400 for nesting.
    max_events_per_request: int = Field(
        default=500, ge=1, le=100_000,
        description="Most events in one capture request (posthog-js sends at most ~150).",
    )
    max_request_nodes: int = Field(
        default=25_000, ge=100,
        description="Most JSON values and object keys in one request, counted from the bytes "
        "before they are parsed (a real posthog-js event has 85-251).",
    )
    max_event_nodes: int = Field(
        default=10_000, ge=100, description="Most JSON values and object keys in one event."
    )
    max_json_depth: int = Field(
        default=64, ge=4, le=512, description="Deepest nesting of objects and arrays in one event."
    )
    max_string_chars: int = Field(
        default=256 * 1024, ge=1024,
        description="Longest string (property value or key) in an event, in characters.",
    )
    body_timeout_seconds: float = Field(
        default=60.0, gt=0,
        description="Longest time a client may take to send a request body (408 after it).",
    )
    offload_bytes: int = Field(
        default=16 * 1024, ge=0,
        description="Bodies larger than this (decoded) are parsed, normalized and scrubbed on a "
        "worker thread, off the event loop; smaller ones inline.",
    )
    offload_queue: int = Field(
        default=16, ge=1,
        description="Most large bodies waiting for the worker thread per process; past it, 503 "
        "with Retry-After.",
    )

    # Stream.
    heartbeat_seconds: float = Field(
        default=15.0, gt=0, description="Idle time on a stream before a heartbeat frame."
    )
    stream_page_size: int = Field(
        default=500, ge=1, le=10_000,
        description="Events per page when a subscriber catches up from Postgres.",
    )
    stream_ring_size: int = Field(
        default=4096, ge=16, description="Recent frames kept in memory per streamed product."
    )
    poll_seconds: float = Field(
        default=5.0, gt=0,
        description="Safety poll of the stream heads, in case a database notification is missed.",
    )

    # Abuse controls (0 disables). Defaults never trip for legitimate use.
    auth_fail_limit: int = Field(
        default=30, ge=0,
        description="Failed authentications per client address and product within the window "
        "before 429 (0 = off).",
    )
    auth_fail_window_seconds: float = Field(
        default=60.0, gt=0, description="The window of `RECEIVER_AUTH_FAIL_LIMIT`."
    )
    ingest_rate_limit: float = Field(
        default=0.0, ge=0,
        description="Events per second per product before 429 with Retry-After (0 = unlimited).",
    )
    ingest_burst: int = Field(
        default=20_000, ge=1, description="Burst allowance of `RECEIVER_INGEST_RATE_LIMIT`."
    )
    ingest_bytes_rate_limit: float = Field(
        default=0.0, ge=0,
        description="Decoded bytes per second per product before 429 + Retry-After (0 = unlimited).",
    )
    ingest_bytes_burst: int = Field(
        default=64 * MIB, ge=1024, description="Burst allowance of RECEIVER_INGEST_BYTES_RATE_LIMIT."
    )

    # Connections (receiver.ops.connections; `receiver serve` only).
    header_timeout_seconds: float = Field(
        default=10.0, gt=0,
        description="Longest time a connection may take to send a request's headers; then it is "
        "closed (slowloris).",
    )
    max_header_bytes: int = Field(
        default=64 * 1024, ge=4096,
        description="Largest request line plus headers, in bytes (431 and close above).",
    )
    max_connections: int = Field(
        default=10_000, ge=16,
        description="Open connections per process (lowered to fit the open-file limit). At the "
        "limit the longest-idle connection without a request in progress is closed.",
    )
    max_concurrent_requests: int = Field(
        default=256, ge=1,
        description="Requests in progress per process, streams and health checks excepted; past "
        "it, 503 with Retry-After.",
    )

    # Agents' reads: live activity over REST and the MCP server (receiver.delivery.pull, .mcp).
    live_activity_limit: int = Field(
        default=20, ge=1, le=1000,
        description="Actions a live-activity read returns when the caller names no limit.",
    )
    live_activity_max_limit: int = Field(
        default=100, ge=1, le=1000,
        description="Most actions one live-activity read may ask for (a larger limit is a 400).",
    )
    live_activity_window_seconds: int = Field(
        default=1800, ge=1, le=7 * 86400,
        description="How far back live activity looks (callers may narrow it with since_seconds).",
    )
    read_pool_size: int = Field(
        default=10, ge=1, le=200,
        description="Database connections per process for agents' reads (live activity, MCP tools), "
        "apart from ingest's; read-only sessions.",
    )
    read_timeout_ms: int = Field(
        default=2000, ge=10, le=60_000,
        description="statement_timeout of agents' reads: a query running longer is cancelled (503).",
    )
    read_rate_limit: float = Field(
        default=20.0, ge=0,
        description="Reads per second per MCP key (REST live activity and every MCP request) before "
        "429 + Retry-After (0 = unlimited).",
    )
    read_burst: int = Field(default=100, ge=1, description="Burst allowance of that limit.")
    mcp_tools: str = Field(
        default="get_live_user_activity,get_user_sessions,find_users_who",
        description="Comma-separated MCP tools to serve. find_users_who lists other users: leave it "
        "out for a key handed to a customer-facing bot.",
    )
    mcp_allowed_origins: str = Field(
        default="",
        description="Comma-separated browser origins allowed to call /mcp (e.g. a hosted MCP "
        "inspector). Requests without an Origin header (servers, CLIs) and from the receiver's own "
        "origin are always allowed; any other Origin is refused (403), against DNS rebinding.",
    )

    # Retention (receiver.storage.retention; per-product overrides in products.retention_days and
    # products.payload_retention_days). 0 = keep forever / keep payloads as long as events.
    retention_days: int = Field(
        default=30, ge=0,
        description="Days events are kept (0 = forever); per product: `receiver db retention`.",
    )
    payload_retention_days: int = Field(
        default=0, ge=0,
        description="Days the raw `payload` JSON is kept before it is cleared; the typed columns "
        "stay (0 = as long as the event).",
    )
    partitions_ahead_days: int = Field(
        default=3, ge=1, le=60, description="Daily partitions of `events` created ahead of time."
    )
    maintenance_seconds: float = Field(
        default=3600.0, ge=0,
        description="Partition and retention maintenance inside the receiver: once at start, then "
        "this often (0 = never; run `receiver db maintain` from cron).",
    )

    # Changing the key changes every hash from then on (users are counted anew).
    pii_hash_key: SecretStr | None = Field(
        default=None,
        description="Installation key for `email: hash` privacy policies (at least 16 characters). "
        "Required once a product hashes emails: the receiver refuses to start without it.",
    )

    # Garbage collection (receiver.ops.heap; `receiver serve` only). Without it, thousands of open
    # streams are walked by every full collection (0.5-0.9 s pauses at 5,000 subscribers).
    gc_freeze: bool = Field(
        default=True,
        description="`receiver serve` freezes what survives each full garbage collection, so "
        "thousands of open streams are not walked by every later one.",
    )
    gc_rescan_seconds: float = Field(
        default=600.0, ge=0,
        description="How often frozen objects are handed back to the collector, so reference "
        "cycles among them are reclaimed (0 = only at shutdown).",
    )

    # Push mode (receiver.delivery.push; docs/push.md).
    push_enabled: bool = Field(
        default=True,
        description="Run push deliverers in this process. Every receiver process competes for "
        "each push endpoint and exactly one delivers it; false keeps this process out.",
    )
    push_allowed_hosts: str = Field(
        default="",
        description="Comma-separated hosts push URLs may point at (exact names or IP literals, "
        "or *.example.com for any subdomain). Empty: any host. Checked at registration and "
        "before every delivery; set it wherever untrusted parties can register products.",
    )
    push_max_attempts: int = Field(
        default=10, ge=1, le=1000,
        description="Attempts per payload (the first included) before it is dead-lettered. "
        "A product overrides it with integration_config.max_attempts.",
    )
    push_max_age_seconds: int = Field(
        default=86_400, ge=1,
        description="A failing payload is dead-lettered when its next attempt would come later "
        "than this after its first one. A product overrides it with "
        "integration_config.max_age_seconds.",
    )
    push_backoff_base_seconds: float = Field(
        default=1.0, gt=0,
        description="Wait after the first failed attempt; it doubles after each further failure, "
        "with jitter (between half and all of it), up to RECEIVER_PUSH_BACKOFF_MAX_SECONDS.",
    )
    push_backoff_max_seconds: float = Field(
        default=300.0, gt=0,
        description="Longest wait between two attempts (a Retry-After answer may ask for more, up "
        "to an hour). Payloads behind a failing one wait for it, so this bounds how late "
        "delivery resumes once an endpoint is back.",
    )
    push_max_in_flight: int = Field(
        default=8, ge=1, le=64,
        description="Requests out at once per push endpoint. Payloads start in position order "
        "and never two of one session at once, so each session's arrive in order; 1 sends "
        "one at a time, so the endpoint gets everything in position order. A product overrides "
        "it with integration_config.max_in_flight.",
    )
    push_timeout_seconds: float = Field(
        default=10.0, gt=0, le=120,
        description="Deadline of one push request, connection included; a request that takes "
        "longer counts as a network error and is retried.",
    )
    push_max_connections: int = Field(
        default=32, ge=1, le=1000,
        description="Push requests in flight at once from this process, over all endpoints.",
    )
    push_db_connections: int = Field(
        default=2, ge=1, le=50,
        description="Database connections push delivery may use in this process (its own pool, "
        "apart from RECEIVER_DB_POOL_SIZE), plus one that holds the deliverers' locks.",
    )
    push_claim_seconds: float = Field(
        default=2.0, gt=0, le=60,
        description="How often a process looks for push endpoints nobody delivers (new ones, or "
        "those of a process that died): how fast another process takes over.",
    )
    push_attempts_kept: int = Field(
        default=200, ge=1, le=100_000,
        description="Attempts kept per push endpoint in push_attempts (the newest ones).",
    )
    push_send_bearer: bool = Field(
        default=True,
        description="Send Authorization: Bearer <secret> with every push, as the hosted "
        "connector does. Turn it off when the endpoint verifies signatures only (the secret "
        "then never travels).",
    )

    # POST /sessions/link (receiver.delivery.links).
    link_rate_limit: float = Field(
        default=2.0, gt=0,
        description="POST /sessions/link requests per second allowed per client address "
        "(a token bucket; over it: 429 with Retry-After).",
    )
    link_burst: int = Field(
        default=20, ge=1,
        description="Burst size of the POST /sessions/link rate limit, per client address.",
    )

    # Logs: one JSON object per line with RECEIVER_LOG_JSON=true (request ids included).
    log_level: str = Field(default="INFO", description="Log level (DEBUG, INFO, WARNING, ...).")
    log_json: bool = Field(
        default=False, description="One JSON object per log line, with request ids."
    )

    @field_validator("database_url", mode="before")
    @classmethod
    def _normalise_driver(cls, value: object) -> object:
        # People paste psql-style URLs; SQLAlchemy needs the asyncpg driver named.
        if isinstance(value, str) and value:
            for prefix in ("postgres://", "postgresql://", "postgresql+psycopg://"):
                if value.startswith(prefix):
                    return "postgresql+asyncpg://" + value[len(prefix) :]
        return value

    @field_validator("admin_token", mode="after")
    @classmethod
    def _admin_token(cls, value: SecretStr | None) -> SecretStr | None:
        # Empty (docker compose's `${RECEIVER_ADMIN_TOKEN:-}`) means unset: the admin API is then
        # open to trusted loopback callers only. A short token would be guessable: refuse to start.
        if value is None or not value.get_secret_value().strip():
            return None
        if len(value.get_secret_value()) < MIN_ADMIN_TOKEN_CHARS:
            raise ValueError(
                f"RECEIVER_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN_CHARS} characters "
                "(e.g. `openssl rand -base64 32`), or empty to allow trusted loopback callers only"
            )
        return value

    @field_validator("pii_hash_key", mode="after")
    @classmethod
    def _strong_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value() == "":
            return None
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("RECEIVER_PII_HASH_KEY must be at least 16 characters (use 32+ random bytes)")
        return value

    def hash_key_bytes(self) -> bytes | None:
        if self.pii_hash_key is None:
            return None
        return self.pii_hash_key.get_secret_value().encode("utf-8")

    def mcp_origins(self) -> frozenset[str]:
        return frozenset(
            o.strip().rstrip("/").lower() for o in self.mcp_allowed_origins.split(",") if o.strip()
        )

    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    def database_url_str(self) -> str:
        if self.database_url is None:
            raise RuntimeError("RECEIVER_DATABASE_URL is not set and no embedded database is running")
        return self.database_url.get_secret_value()
